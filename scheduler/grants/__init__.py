"""The grant programme and the rollout of room units: programmes, applications, the inventory, self-tests."""
