"""Load generators and benchmarks that print JSON; never imported by the service."""
