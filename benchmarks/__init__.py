"""Benchmarks, each compared with a peer measured in the same run (`kfusion bench NAME`)."""
