"""Models the project trains itself, once, and caches under `paths.cache_dir` keyed by their full recipe: the digits
classifiers and the digits score model (config targets, trained on first use), A5's robustifier and the BPDA
approximator (bound to a run's parts). A sidecar with each file's recipe and sha256 makes a damaged cache retrain."""
