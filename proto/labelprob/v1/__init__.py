"""Generated gRPC stubs of the labelprob.v1 API (regenerate with `make stubs`)."""
