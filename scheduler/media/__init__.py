"""Media nodes and rooms: registration and leases, placement of rooms on workers, and
room signals between nodes."""
