"""deploy/kubernetes, deploy/kserve and deploy/container: rendered, validated, and run."""
