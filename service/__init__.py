"""The HTTP API and the `referee` command line. Knows nothing about CUDA; never imports torch."""
