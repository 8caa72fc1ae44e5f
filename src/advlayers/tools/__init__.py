"""Around the pipeline: the `advlayers` command line, the GPU cost model, `verify`, the cluster preflight,
export to torchvision, and the library files each workflow script runs (`sources`)."""
