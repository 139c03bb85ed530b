/**
 * A typed TypeScript client sending models their inputs by name (PredictRequest's
 * `inputs`: NamedTensors of any dtype), from proto/ alone, like client.ts.
 *
 * Usage: node dist/named.js HOST:PORT CASES.json
 *
 * CASES.json: {"models": [names], "cases": [{"id", "model", "raw": bool,
 *   "inputs": [{"name", "dtype" (a DataType name), "shape", "values" (row-major)}]}]}
 *
 * For each model, GetModel's signature (every input's name, dtype and shape); for
 * each case, one Predict with its inputs as raw little-endian bytes (`raw`: STRING
 * as 4-byte length-prefixed UTF-8) or as the typed values field of their dtype, and
 * what came back: each output's dtype, shape and values (raw or typed), or the
 * status code and message. Prints one JSON object; exits 2 if the client crashed.
 */

import * as path from 'node:path';

import * as fs from 'node:fs';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';

import type { ProtoGrpcType as ScorewireProto } from './generated/scorewire';
import type { ModelInfo__Output } from './generated/scorewire/v1/ModelInfo';
import type { ModelServiceClient } from './generated/scorewire/v1/ModelService';
import type { NamedTensor } from './generated/scorewire/v1/NamedTensor';
import type { PredictResponse__Output } from './generated/scorewire/v1/PredictResponse';
import type { PredictServiceClient } from './generated/scorewire/v1/PredictService';
import type { Tensor } from './generated/scorewire/v1/Tensor';
import type { Tensor__Output } from './generated/scorewire/v1/Tensor';

const REPO_PROTO = path.resolve(__dirname, '..', '..', '..', '..', 'proto');
// NOTE: the flags of `npm run gen` (package.json), as in client.ts
const LOADER_OPTIONS: protoLoader.Options = {
  keepCase: true, longs: String, enums: String, defaults: true, oneofs: true, includeDirs: [REPO_PROTO],
};
const CALL_TIMEOUT_MS = 10_000;

type Value = number | string | boolean;

interface Input {
  name: string;
  dtype: string;
  shape: number[];
  values: Value[];
}

interface Case {
  id: string;
  model: string;
  raw: boolean;
  inputs: Input[];
}

interface Decoded {
  dtype: string;
  shape: number[];
  values: Value[];
  raw: boolean;
}

/** The typed values field of each DataType (narrow types share a wider field). */
const FIELD: Record<string, keyof Tensor> = {
  FLOAT16: 'float_values', FLOAT32: 'float_values', FLOAT64: 'double_values',
  INT8: 'int32_values', INT16: 'int32_values', INT32: 'int32_values', INT64: 'int64_values',
  UINT8: 'uint32_values', UINT16: 'uint32_values', UINT32: 'uint32_values', UINT64: 'uint64_values',
  BOOL: 'bool_values', STRING: 'string_values',
};

/** Little-endian writers and readers of the raw layouts used here. */
const RAW: Record<string, { size: number; write: (b: Buffer, v: Value, at: number) => void; read: (b: Buffer, at: number) => Value }> = {
  FLOAT32: { size: 4, write: (b, v, at) => b.writeFloatLE(Number(v), at), read: (b, at) => b.readFloatLE(at) },
  FLOAT64: { size: 8, write: (b, v, at) => b.writeDoubleLE(Number(v), at), read: (b, at) => b.readDoubleLE(at) },
  INT32: { size: 4, write: (b, v, at) => b.writeInt32LE(Number(v), at), read: (b, at) => b.readInt32LE(at) },
  INT64: {
    size: 8,
    write: (b, v, at) => b.writeBigInt64LE(BigInt(v), at),
    read: (b, at) => Number(b.readBigInt64LE(at)),
  },
  UINT8: { size: 1, write: (b, v, at) => b.writeUInt8(Number(v), at), read: (b, at) => b.readUInt8(at) },
  BOOL: { size: 1, write: (b, v, at) => b.writeUInt8(v ? 1 : 0, at), read: (b, at) => b.readUInt8(at) === 1 },
};

/** STRING as raw contents: each element a 4-byte little-endian length, then its UTF-8. */
function stringBytes(values: Value[]): Buffer {
  return Buffer.concat(values.map((v) => {
    const text = Buffer.from(String(v), 'utf8');
    const len = Buffer.alloc(4);
    len.writeUInt32LE(text.length, 0);
    return Buffer.concat([len, text]);
  }));
}

function encode(input: Input, raw: boolean): NamedTensor {
  const tensor: Tensor = { dtype: input.dtype as Tensor['dtype'], shape: input.shape };
  if (raw) {
    if (input.dtype === 'STRING') {
      tensor.raw = stringBytes(input.values);
    } else {
      const layout = RAW[input.dtype];
      if (layout === undefined) throw new Error(`no raw layout here for ${input.dtype}`);
      const buf = Buffer.alloc(input.values.length * layout.size);
      input.values.forEach((v, i) => layout.write(buf, v, i * layout.size));
      tensor.raw = buf;
    }
  } else {
    const field = FIELD[input.dtype];
    if (field === undefined) throw new Error(`no typed field for ${input.dtype}`);
    const values = input.dtype === 'INT64' || input.dtype === 'UINT64' ? input.values.map(String) : input.values;
    (tensor as Record<string, unknown>)[field] = values;
  }
  return { name: input.name, tensor };
}

function decode(t: Tensor__Output): Decoded {
  const shape = t.shape.map(Number);
  const count = shape.reduce((a, b) => a * b, 1);
  const raw = t.raw.length > 0;
  let values: Value[];
  if (raw) {
    const layout = RAW[t.dtype];
    if (layout === undefined) throw new Error(`raw output of dtype ${t.dtype}`);
    if (t.raw.length !== count * layout.size) throw new Error(`${t.raw.length} raw bytes for shape [${shape}]`);
    values = Array.from({ length: count }, (_, i) => layout.read(t.raw, i * layout.size));
  } else {
    const field = FIELD[t.dtype] as keyof Tensor__Output;
    const typed = t[field] as Value[];
    values = t.dtype === 'INT64' || t.dtype === 'UINT64' ? typed.map(Number) : typed;
  }
  if (values.length !== count) throw new Error(`${values.length} values for shape [${shape}]`);
  return { dtype: t.dtype, shape, values, raw };
}

function call<T>(start: (cb: grpc.requestCallback<T>) => unknown): Promise<T> {
  return new Promise((resolve, reject) => {
    start((err, value) => (err ? reject(err) : resolve(value as T)));
  });
}

function deadline(): grpc.CallOptions {
  return { deadline: Date.now() + CALL_TIMEOUT_MS };
}

async function main(addr: string, casesPath: string): Promise<Record<string, unknown>> {
  const plan = JSON.parse(fs.readFileSync(casesPath, 'utf8')) as { models: string[]; cases: Case[] };
  const def = protoLoader.loadSync('scorewire/v1/scorewire.proto', LOADER_OPTIONS);
  const v1 = (grpc.loadPackageDefinition(def) as unknown as ScorewireProto).scorewire.v1;
  const creds = grpc.credentials.createInsecure();
  const models: ModelServiceClient = new v1.ModelService(addr, creds);
  const predict: PredictServiceClient = new v1.PredictService(addr, creds);
  try {
    const signatures: Record<string, unknown> = {};
    for (const name of plan.models) {
      const info = await call<ModelInfo__Output>((cb) => models.GetModel({ name }, deadline(), cb));
      const sig = info.versions[0]?.signature;
      signatures[name] = {
        tabular: sig?.tabular,
        inputs: (sig?.inputs ?? []).map((i) => ({ name: i.name, dtype: i.dtype, shape: i.shape.map(Number) })),
      };
    }
    const results: Record<string, unknown> = {};
    for (const c of plan.cases) {
      const request = { model: c.model, request_id: c.id, inputs: c.inputs.map((i) => encode(i, c.raw)) };
      try {
        const r = await call<PredictResponse__Output>((cb) => predict.Predict(request, deadline(), cb));
        const outputs: Record<string, Decoded> = {};
        for (const [name, t] of Object.entries(r.outputs)) outputs[name] = decode(t);
        results[c.id] = { model: r.model, version: Number(r.version), request_id: r.request_id, outputs };
      } catch (e) {
        const err = e as grpc.ServiceError;
        if (typeof err?.code !== 'number') throw e;
        results[c.id] = { code: err.code, details: err.details };
      }
    }
    return { signatures, results };
  } finally {
    models.close();
    predict.close();
  }
}

const [addr, casesPath] = process.argv.slice(2);
if (!addr || !casesPath) {
  process.stderr.write('usage: node dist/named.js HOST:PORT CASES.json\n');
  process.exit(64);
}
main(addr, casesPath).then(
  (report) => process.stdout.write(JSON.stringify({ ok: true, ...report }) + '\n'),
  (err: unknown) => {
    process.stdout.write(JSON.stringify({ ok: false, error: String(err) }) + '\n');
    process.exitCode = 2;
  },
);
