// loadgen: an asynchronous gRPC load generator for scorewire (and anything that
// speaks its protocols).
//
// Protocols:
//   v1         scorewire.v1.PredictService/Predict (unary)
//   v1-stream  scorewire.v1.PredictService/PredictStream (bidirectional; one
//              stream per connection, --concurrency messages in flight on it)
//   oip        inference.GRPCInferenceService/ModelInfer (unary, OIP v2)
//
// The request is built and serialized ONCE into a grpc::ByteBuffer and sent
// through the generic stub, so a call costs the client a ref-count, not a
// protobuf serialization. Each of --threads client threads owns a
// CompletionQueue and drives the connections assigned to it. Every connection is
// a separate channel with distinct channel arguments (and a local subchannel
// pool), so --connections N really opens N TCP connections.
//
// Timeline: connect all channels; one checked call (synchronous, generated stub,
// response parsed and summarised); then load for --warmup-s (not counted) and
// --duration-s (counted: calls that complete inside the window); then stop
// issuing and drain what is in flight (bounded by --timeout-s per call).
//
// Output: one JSON line on stdout. Latencies are in microseconds, measured from
// the call's start (unary) or its message's write (stream) to its completion.
// "calls_total" counts every completed call in every phase (for per-call server
// CPU accounting by the caller).

#include <sys/resource.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <map>
#include <memory>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <grpcpp/generic/generic_stub.h>
#include <grpcpp/grpcpp.h>
#include <grpcpp/support/proto_buffer_reader.h>

#include "inference/grpc_service.grpc.pb.h"
#include "scorewire/v1/scorewire.grpc.pb.h"

namespace {

using Clock = std::chrono::steady_clock;
namespace v1 = scorewire::v1;

// --------------------------------------------------------------------------
// Options
// --------------------------------------------------------------------------

struct Options {
  std::string addr = "127.0.0.1:50051";
  std::string protocol = "v1";  // v1 | v1-stream | oip
  std::string model = "breast-cancer";
  int features = 30;
  std::string dtype = "float64";  // float32 | float64
  int rows = 1;
  bool raw = false;
  int connections = 1;
  int concurrency = 1;
  int threads = 2;
  double warmup_s = 1.0;
  double duration_s = 5.0;
  double timeout_s = 10.0;
  std::string input_name = "input";
  std::string outputs;  // comma-separated; empty: all
};

[[noreturn]] void Usage(const char* msg) {
  if (msg != nullptr) std::fprintf(stderr, "loadgen: %s\n", msg);
  std::fprintf(stderr,
               "usage: loadgen [--addr HOST:PORT] [--protocol v1|v1-stream|oip] [--model NAME]\n"
               "               [--features F] [--dtype float32|float64] [--rows R] [--raw]\n"
               "               [--connections N] [--concurrency C] [--threads T]\n"
               "               [--warmup-s S] [--duration-s S] [--timeout-s S]\n"
               "               [--input-name NAME] [--outputs a,b]\n");
  std::exit(2);
}

Options ParseOptions(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    std::string value;
    bool has_value = false;
    auto eq = a.find('=');
    if (a.rfind("--", 0) == 0 && eq != std::string::npos) {
      value = a.substr(eq + 1);
      a = a.substr(0, eq);
      has_value = true;
    }
    auto next = [&]() -> std::string {
      if (has_value) return value;
      if (i + 1 >= argc) Usage(("missing value for " + a).c_str());
      return argv[++i];
    };
    auto next_int = [&]() -> int {
      std::string v = next();
      char* end = nullptr;
      long n = std::strtol(v.c_str(), &end, 10);
      if (end == v.c_str() || *end != '\0' || n < 0 || n > 1000000000) Usage(("bad integer for " + a).c_str());
      return static_cast<int>(n);
    };
    auto next_double = [&]() -> double {
      std::string v = next();
      char* end = nullptr;
      double d = std::strtod(v.c_str(), &end);
      if (end == v.c_str() || *end != '\0' || !(d >= 0)) Usage(("bad number for " + a).c_str());
      return d;
    };
    if (a == "--addr") o.addr = next();
    else if (a == "--protocol") o.protocol = next();
    else if (a == "--model") o.model = next();
    else if (a == "--features") o.features = next_int();
    else if (a == "--dtype") o.dtype = next();
    else if (a == "--rows") o.rows = next_int();
    else if (a == "--raw") o.raw = true;
    else if (a == "--connections") o.connections = next_int();
    else if (a == "--concurrency") o.concurrency = next_int();
    else if (a == "--threads") o.threads = next_int();
    else if (a == "--warmup-s") o.warmup_s = next_double();
    else if (a == "--duration-s") o.duration_s = next_double();
    else if (a == "--timeout-s") o.timeout_s = next_double();
    else if (a == "--input-name") o.input_name = next();
    else if (a == "--outputs") o.outputs = next();
    else if (a == "--help" || a == "-h") Usage(nullptr);
    else Usage(("unknown option " + a).c_str());
  }
  if (o.protocol != "v1" && o.protocol != "v1-stream" && o.protocol != "oip") Usage("--protocol: v1, v1-stream or oip");
  if (o.dtype != "float32" && o.dtype != "float64") Usage("--dtype: float32 or float64");
  if (o.features < 1 || o.connections < 1 || o.concurrency < 1 || o.threads < 1) Usage("counts must be >= 1");
  if (o.duration_s <= 0) Usage("--duration-s must be > 0");
  return o;
}

std::vector<std::string> SplitCommas(const std::string& s) {
  std::vector<std::string> out;
  std::stringstream ss(s);
  std::string item;
  while (std::getline(ss, item, ',')) {
    if (!item.empty()) out.push_back(item);
  }
  return out;
}

// --------------------------------------------------------------------------
// JSON output (a tiny writer: strings escaped, numbers as given)
// --------------------------------------------------------------------------

std::string JsonString(const std::string& s) {
  std::string out = "\"";
  for (unsigned char c : s) {
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      default:
        if (c < 0x20) {
          char buf[8];
          std::snprintf(buf, sizeof buf, "\\u%04x", c);
          out += buf;
        } else {
          out += static_cast<char>(c);
        }
    }
  }
  return out + "\"";
}

std::string JsonNumber(double d) {
  if (!std::isfinite(d)) return "null";
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.6g", d);
  return buf;
}

const char* CodeName(int code) {
  static const char* kNames[] = {"OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED",
                                 "NOT_FOUND", "ALREADY_EXISTS", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED",
                                 "FAILED_PRECONDITION", "ABORTED", "OUT_OF_RANGE", "UNIMPLEMENTED", "INTERNAL",
                                 "UNAVAILABLE", "DATA_LOSS", "UNAUTHENTICATED"};
  return (code >= 0 && code <= 16) ? kNames[code] : "CODE_OUT_OF_RANGE";
}

std::string Shape(const google::protobuf::RepeatedField<int64_t>& shape) {
  std::string s = "[";
  for (int i = 0; i < shape.size(); ++i) s += (i ? "," : "") + std::to_string(shape.Get(i));
  return s + "]";
}

// --------------------------------------------------------------------------
// The request, built and serialized once
// --------------------------------------------------------------------------

// Deterministic, finite, varied feature values.
double Feature(int64_t i) { return std::sin(0.37 * static_cast<double>(i)) * (1.0 + (i % 7)); }

void FillTensor(const Options& o, v1::Tensor* t) {
  const int64_t n = static_cast<int64_t>(o.rows) * o.features;
  const bool f32 = o.dtype == "float32";
  t->set_dtype(f32 ? v1::FLOAT32 : v1::FLOAT64);
  t->add_shape(o.rows);
  t->add_shape(o.features);
  if (o.raw) {
    std::string bytes(static_cast<size_t>(n) * (f32 ? 4 : 8), '\0');
    for (int64_t i = 0; i < n; ++i) {
      if (f32) {
        float v = static_cast<float>(Feature(i));
        std::memcpy(&bytes[i * 4], &v, 4);  // little-endian host (x86-64, arm64)
      } else {
        double v = Feature(i);
        std::memcpy(&bytes[i * 8], &v, 8);
      }
    }
    t->set_raw(std::move(bytes));
  } else if (f32) {
    t->mutable_float_values()->Reserve(static_cast<int>(n));
    for (int64_t i = 0; i < n; ++i) t->add_float_values(static_cast<float>(Feature(i)));
  } else {
    t->mutable_double_values()->Reserve(static_cast<int>(n));
    for (int64_t i = 0; i < n; ++i) t->add_double_values(Feature(i));
  }
}

v1::PredictRequest BuildV1(const Options& o) {
  v1::PredictRequest r;
  r.set_model(o.model);
  FillTensor(o, r.mutable_input());
  for (const auto& name : SplitCommas(o.outputs)) r.add_outputs(name);
  r.set_request_id("loadgen-0");
  return r;
}

inference::ModelInferRequest BuildOip(const Options& o) {
  // the same values as v1, moved into OIP's fields
  v1::Tensor t;
  FillTensor(o, &t);
  inference::ModelInferRequest r;
  r.set_model_name(o.model);
  r.set_id("loadgen-0");
  auto* in = r.add_inputs();
  in->set_name(o.input_name);
  in->set_datatype(o.dtype == "float32" ? "FP32" : "FP64");
  in->add_shape(o.rows);
  in->add_shape(o.features);
  if (o.raw) {
    r.add_raw_input_contents(t.raw());
  } else if (o.dtype == "float32") {
    *in->mutable_contents()->mutable_fp32_contents() = t.float_values();
  } else {
    *in->mutable_contents()->mutable_fp64_contents() = t.double_values();
  }
  for (const auto& name : SplitCommas(o.outputs)) r.add_outputs()->set_name(name);
  return r;
}

grpc::ByteBuffer ToByteBuffer(const google::protobuf::Message& m) {
  std::string bytes = m.SerializeAsString();
  grpc::Slice slice(bytes);
  return grpc::ByteBuffer(&slice, 1);
}

template <class M>
bool ParseByteBuffer(grpc::ByteBuffer* bb, M* out) {
  grpc::ProtoBufferReader reader(bb);
  return out->ParseFromZeroCopyStream(&reader);
}

// --------------------------------------------------------------------------
// The checked call: one synchronous call before the load, its response summarised
// --------------------------------------------------------------------------

std::string SummariseV1(const v1::PredictResponse& r) {
  std::string s = "{\"model\":" + JsonString(r.model()) + ",\"version\":" + std::to_string(r.version()) +
                  ",\"request_id\":" + JsonString(r.request_id()) + ",\"outputs\":{";
  std::vector<std::string> names;
  for (const auto& kv : r.outputs()) names.push_back(kv.first);
  std::sort(names.begin(), names.end());
  for (size_t i = 0; i < names.size(); ++i) {
    s += (i ? "," : "") + JsonString(names[i]) + ":" + Shape(r.outputs().at(names[i]).shape());
  }
  return s + "}}";
}

std::string StatusJson(const grpc::Status& st, const std::string& detail) {
  std::string s = "{\"code\":" + JsonString(CodeName(st.error_code()));
  if (!st.ok()) s += ",\"message\":" + JsonString(st.error_message());
  if (!detail.empty()) s += ",\"response\":" + detail;
  return s + "}";
}

std::string CheckOnce(const Options& o, const std::shared_ptr<grpc::Channel>& channel,
                      const v1::PredictRequest& v1req, const inference::ModelInferRequest& oipreq) {
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() +
                   std::chrono::milliseconds(static_cast<int64_t>(o.timeout_s * 1000)));
  if (o.protocol == "v1") {
    auto stub = v1::PredictService::NewStub(channel);
    v1::PredictResponse resp;
    grpc::Status st = stub->Predict(&ctx, v1req, &resp);
    return StatusJson(st, st.ok() ? SummariseV1(resp) : "");
  }
  if (o.protocol == "v1-stream") {
    auto stub = v1::PredictService::NewStub(channel);
    auto stream = stub->PredictStream(&ctx);
    v1::PredictStreamResponse resp;
    bool got = stream->Write(v1req) && stream->Read(&resp);
    stream->WritesDone();
    v1::PredictStreamResponse extra;
    while (stream->Read(&extra)) {
    }
    grpc::Status st = stream->Finish();
    std::string detail;
    if (got) {
      if (resp.has_error()) {
        detail = "{\"request_id\":" + JsonString(resp.request_id()) + ",\"error\":{\"code\":" +
                 JsonString(CodeName(resp.error().code())) + ",\"message\":" + JsonString(resp.error().message()) + "}}";
      } else {
        detail = "{\"request_id\":" + JsonString(resp.request_id()) + ",\"response\":" + SummariseV1(resp.response()) + "}";
      }
    } else if (st.ok()) {
      st = grpc::Status(grpc::StatusCode::UNKNOWN, "the stream ended without a response");
    }
    return StatusJson(st, detail);
  }
  auto stub = inference::GRPCInferenceService::NewStub(channel);
  inference::ModelInferResponse resp;
  grpc::Status st = stub->ModelInfer(&ctx, oipreq, &resp);
  std::string detail;
  if (st.ok()) {
    detail = "{\"model_name\":" + JsonString(resp.model_name()) + ",\"model_version\":" +
             JsonString(resp.model_version()) + ",\"id\":" + JsonString(resp.id()) + ",\"outputs\":{";
    for (int i = 0; i < resp.outputs_size(); ++i) {
      detail += (i ? "," : "") + JsonString(resp.outputs(i).name()) + ":" + Shape(resp.outputs(i).shape());
    }
    detail += "},\"raw_output_contents\":" + std::to_string(resp.raw_output_contents_size()) + "}";
  }
  return StatusJson(st, detail);
}

// --------------------------------------------------------------------------
// The load: per-thread workers, each with its own CompletionQueue
// --------------------------------------------------------------------------

struct Window {
  Clock::time_point measure_start;
  Clock::time_point end;
};

struct Stats {
  std::vector<int64_t> latency_ns;  // completed OK inside the window
  uint64_t ok = 0;                  // inside the window
  uint64_t calls_total = 0;         // every completed call (or stream message), any phase
  std::map<std::string, uint64_t> errors;  // inside the window, by status name
};

class Tag {
 public:
  virtual ~Tag() = default;
  virtual void Proceed(bool ok) = 0;
};

class Worker;

struct Shared {
  const Options* opt;
  grpc::ByteBuffer request;
  std::string method;
  Window window;
};

class Worker {
 public:
  explicit Worker(const Shared* shared) : shared_(shared) {}

  const Shared& shared() const { return *shared_; }
  grpc::CompletionQueue* cq() { return &cq_; }
  Stats& stats() { return stats_; }
  int outstanding = 0;

  void Record(Clock::time_point t0, Clock::time_point t1, const std::string& error) {
    ++stats_.calls_total;
    if (t1 < shared_->window.measure_start || t1 >= shared_->window.end) return;
    if (error.empty()) {
      ++stats_.ok;
      stats_.latency_ns.push_back(std::chrono::duration_cast<std::chrono::nanoseconds>(t1 - t0).count());
    } else {
      ++stats_.errors[error];
    }
  }

  void Loop() {
    void* tag = nullptr;
    bool ok = false;
    while (outstanding > 0 && cq_.Next(&tag, &ok)) static_cast<Tag*>(tag)->Proceed(ok);
    cq_.Shutdown();
    while (cq_.Next(&tag, &ok)) {
    }
  }

 private:
  const Shared* shared_;
  grpc::CompletionQueue cq_;
  Stats stats_;
};

// A fresh context (contexts are single-use) whose deadline is `timeout_us` from now.
grpc::ClientContext* NewContext(std::unique_ptr<grpc::ClientContext>* holder, int64_t timeout_us) {
  holder->reset(new grpc::ClientContext());
  (*holder)->set_deadline(gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC), gpr_time_from_micros(timeout_us, GPR_TIMESPAN)));
  return holder->get();
}

// One unary call slot: as soon as a call completes, the next one starts.
class UnarySlot final : public Tag {
 public:
  UnarySlot(Worker* w, grpc::GenericStub* stub) : w_(w), stub_(stub) {}

  void Start() {
    const Shared& s = w_->shared();
    t0_ = Clock::now();
    grpc::ClientContext* ctx = NewContext(&ctx_, static_cast<int64_t>(s.opt->timeout_s * 1e6));
    rpc_ = stub_->PrepareUnaryCall(ctx, s.method, s.request, w_->cq());
    rpc_->StartCall();
    rpc_->Finish(&response_, &status_, this);
    ++w_->outstanding;
  }

  void Proceed(bool) override {
    Clock::time_point t1 = Clock::now();
    --w_->outstanding;
    w_->Record(t0_, t1, status_.ok() ? std::string() : CodeName(status_.error_code()));
    response_.Clear();
    if (t1 < w_->shared().window.end) Start();
  }

 private:
  Worker* w_;
  grpc::GenericStub* stub_;
  std::unique_ptr<grpc::ClientContext> ctx_;
  std::unique_ptr<grpc::GenericClientAsyncResponseReader> rpc_;
  grpc::ByteBuffer response_;
  grpc::Status status_;
  Clock::time_point t0_;
};

// One PredictStream: up to `concurrency` messages written and not yet answered.
// gRPC allows one outstanding Write and one outstanding Read per stream.
class StreamConn {
 public:
  StreamConn(Worker* w, grpc::GenericStub* stub, int window)
      : w_(w), stub_(stub), window_(window), start_(this, kStart), write_(this, kWrite), read_(this, kRead),
        writes_done_(this, kWritesDone), finish_(this, kFinish) {}

  void Start() {
    const Shared& s = w_->shared();
    auto until_end = std::chrono::duration_cast<std::chrono::microseconds>(s.window.end - Clock::now()).count();
    NewContext(&ctx_, until_end + static_cast<int64_t>(s.opt->timeout_s * 1e6));
    rpc_ = stub_->PrepareCall(ctx_.get(), s.method, w_->cq());
    rpc_->StartCall(&start_);
    ++w_->outstanding;
  }

 private:
  enum Op { kStart, kWrite, kRead, kWritesDone, kFinish };
  struct OpTag final : public Tag {
    OpTag(StreamConn* c, Op op) : conn(c), op(op) {}
    void Proceed(bool ok) override { conn->Proceed(op, ok); }
    StreamConn* conn;
    Op op;
  };

  void Proceed(Op op, bool ok) {
    switch (op) {
      case kStart:
        if (!ok) return Finish();
        rpc_->Read(&response_, &read_);
        MaybeWrite();
        break;
      case kWrite:
        write_pending_ = false;
        if (ok) MaybeWrite();  // a failed write: the pending read fails too and finishes
        break;
      case kRead: {
        if (!ok) return Finish();
        Clock::time_point t1 = Clock::now();
        Clock::time_point t0 = sent_.empty() ? t1 : sent_.front();
        if (!sent_.empty()) sent_.pop_front();
        v1::PredictStreamResponse msg;
        std::string error;
        if (!ParseByteBuffer(&response_, &msg)) {
          error = "UNPARSEABLE_RESPONSE";
        } else if (msg.has_error()) {
          error = std::string("stream:") + CodeName(msg.error().code());
        }
        response_.Clear();
        w_->Record(t0, t1, error);
        rpc_->Read(&response_, &read_);
        MaybeWrite();
        break;
      }
      case kWritesDone:
        break;  // the server ends the stream once it has answered everything
      case kFinish: {
        --w_->outstanding;
        if (!status_.ok()) {
          // a stream that ends in error: count it once, at its end time
          ++w_->stats().calls_total;
          Clock::time_point t = Clock::now();
          if (t >= w_->shared().window.measure_start && t < w_->shared().window.end)
            ++w_->stats().errors[std::string("stream_end:") + CodeName(status_.error_code())];
        }
        break;
      }
    }
  }

  void MaybeWrite() {
    if (write_pending_ || writes_done_called_) return;
    Clock::time_point now = Clock::now();
    if (now >= w_->shared().window.end) {
      if (sent_.empty()) {
        writes_done_called_ = true;
        rpc_->WritesDone(&writes_done_);
      }
      return;
    }
    if (static_cast<int>(sent_.size()) >= window_) return;
    sent_.push_back(now);
    write_pending_ = true;
    rpc_->Write(w_->shared().request, &write_);
  }

  void Finish() {
    if (finishing_) return;
    finishing_ = true;
    rpc_->Finish(&status_, &finish_);
  }

  Worker* w_;
  grpc::GenericStub* stub_;
  int window_;
  OpTag start_, write_, read_, writes_done_, finish_;
  std::unique_ptr<grpc::ClientContext> ctx_;
  std::unique_ptr<grpc::GenericClientAsyncReaderWriter> rpc_;
  grpc::ByteBuffer response_;
  grpc::Status status_;
  std::deque<Clock::time_point> sent_;
  bool write_pending_ = false;
  bool writes_done_called_ = false;
  bool finishing_ = false;
};

double CpuSeconds() {
  rusage ru{};
  getrusage(RUSAGE_SELF, &ru);
  return ru.ru_utime.tv_sec + ru.ru_stime.tv_sec + (ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}

double Percentile(const std::vector<int64_t>& sorted_ns, double q) {
  if (sorted_ns.empty()) return NAN;
  size_t rank = static_cast<size_t>(std::ceil(q * static_cast<double>(sorted_ns.size())));
  rank = std::min(std::max<size_t>(rank, 1), sorted_ns.size());
  return static_cast<double>(sorted_ns[rank - 1]) / 1000.0;
}

}  // namespace

int main(int argc, char** argv) {
  Options o = ParseOptions(argc, argv);

  // 1. channels: one per connection, each with distinct arguments so that none
  //    share a subchannel (a TCP connection)
  std::vector<std::shared_ptr<grpc::Channel>> channels;
  for (int i = 0; i < o.connections; ++i) {
    grpc::ChannelArguments args;
    args.SetInt("scorewire.loadgen.connection", i);
    args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
    args.SetMaxReceiveMessageSize(-1);
    args.SetMaxSendMessageSize(-1);
    channels.push_back(grpc::CreateCustomChannel(o.addr, grpc::InsecureChannelCredentials(), args));
  }
  for (auto& ch : channels) {
    if (!ch->WaitForConnected(std::chrono::system_clock::now() + std::chrono::seconds(10))) {
      std::printf("{\"error\":%s}\n", JsonString("cannot connect to " + o.addr).c_str());
      return 1;
    }
  }

  // 2. the request, serialized once; one checked call
  v1::PredictRequest v1req = BuildV1(o);
  inference::ModelInferRequest oipreq = BuildOip(o);
  Shared shared;
  shared.opt = &o;
  if (o.protocol == "oip") {
    shared.request = ToByteBuffer(oipreq);
    shared.method = "/inference.GRPCInferenceService/ModelInfer";
  } else {
    shared.request = ToByteBuffer(v1req);
    shared.method = o.protocol == "v1" ? "/scorewire.v1.PredictService/Predict"
                                       : "/scorewire.v1.PredictService/PredictStream";
  }
  const size_t request_bytes = shared.request.Length();
  std::string check = CheckOnce(o, channels[0], v1req, oipreq);

  // 3. the load
  std::vector<std::unique_ptr<grpc::GenericStub>> stubs;
  for (auto& ch : channels) stubs.emplace_back(new grpc::GenericStub(ch));
  const int n_threads = std::min(o.threads, o.connections * o.concurrency);
  std::vector<std::unique_ptr<Worker>> workers;
  for (int t = 0; t < n_threads; ++t) workers.emplace_back(new Worker(&shared));

  Clock::time_point t_start = Clock::now();
  shared.window.measure_start = t_start + std::chrono::microseconds(static_cast<int64_t>(o.warmup_s * 1e6));
  shared.window.end = shared.window.measure_start + std::chrono::microseconds(static_cast<int64_t>(o.duration_s * 1e6));
  const double cpu0 = CpuSeconds();

  std::vector<std::unique_ptr<UnarySlot>> slots;
  std::vector<std::unique_ptr<StreamConn>> streams;
  // spread connections (and, with one connection, its call slots) over the threads
  int next_worker = 0;
  for (int c = 0; c < o.connections; ++c) {
    if (o.protocol == "v1-stream") {
      Worker* w = workers[next_worker++ % n_threads].get();
      streams.emplace_back(new StreamConn(w, stubs[c].get(), o.concurrency));
      streams.back()->Start();
    } else {
      for (int k = 0; k < o.concurrency; ++k) {
        Worker* w = workers[next_worker++ % n_threads].get();
        slots.emplace_back(new UnarySlot(w, stubs[c].get()));
        slots.back()->Start();
      }
    }
  }
  std::vector<std::thread> threads;
  for (auto& w : workers) threads.emplace_back([&w] { w->Loop(); });
  for (auto& th : threads) th.join();
  const double cpu1 = CpuSeconds();
  const double wall = std::chrono::duration<double>(Clock::now() - t_start).count();

  // 4. results
  Stats all;
  for (auto& w : workers) {
    Stats& s = w->stats();
    all.ok += s.ok;
    all.calls_total += s.calls_total;
    all.latency_ns.insert(all.latency_ns.end(), s.latency_ns.begin(), s.latency_ns.end());
    for (auto& kv : s.errors) all.errors[kv.first] += kv.second;
  }
  std::sort(all.latency_ns.begin(), all.latency_ns.end());
  double mean = 0;
  for (int64_t v : all.latency_ns) mean += static_cast<double>(v);
  mean = all.latency_ns.empty() ? NAN : mean / static_cast<double>(all.latency_ns.size()) / 1000.0;

  std::string errors = "{";
  bool first = true;
  for (auto& kv : all.errors) {
    errors += (first ? "" : ",") + JsonString(kv.first) + ":" + std::to_string(kv.second);
    first = false;
  }
  errors += "}";

  const double req_s = static_cast<double>(all.ok) / o.duration_s;
  std::string out = "{";
  out += "\"protocol\":" + JsonString(o.protocol);
  out += ",\"model\":" + JsonString(o.model);
  out += ",\"rows\":" + std::to_string(o.rows);
  out += ",\"features\":" + std::to_string(o.features);
  out += ",\"dtype\":" + JsonString(o.dtype);
  out += ",\"raw\":" + std::string(o.raw ? "true" : "false");
  out += ",\"connections\":" + std::to_string(o.connections);
  out += ",\"concurrency\":" + std::to_string(o.concurrency);
  out += ",\"threads\":" + std::to_string(n_threads);
  out += ",\"request_bytes\":" + std::to_string(request_bytes);
  out += ",\"duration_s\":" + JsonNumber(o.duration_s);
  out += ",\"requests\":" + std::to_string(all.ok);
  out += ",\"req_per_s\":" + JsonNumber(req_s);
  out += ",\"rows_per_s\":" + JsonNumber(req_s * o.rows);
  out += ",\"latency_us\":{\"p50\":" + JsonNumber(Percentile(all.latency_ns, 0.50)) +
         ",\"p90\":" + JsonNumber(Percentile(all.latency_ns, 0.90)) +
         ",\"p99\":" + JsonNumber(Percentile(all.latency_ns, 0.99)) +
         ",\"max\":" + JsonNumber(Percentile(all.latency_ns, 1.0)) + ",\"mean\":" + JsonNumber(mean) + "}";
  out += ",\"errors\":" + errors;
  out += ",\"calls_total\":" + std::to_string(all.calls_total);
  out += ",\"wall_s\":" + JsonNumber(wall);
  out += ",\"client_cpu_us_per_call\":" +
         JsonNumber(all.calls_total ? (cpu1 - cpu0) * 1e6 / static_cast<double>(all.calls_total) : NAN);
  out += ",\"check\":" + check;
  out += "}";
  std::printf("%s\n", out.c_str());
  std::fflush(stdout);
  return 0;
}
