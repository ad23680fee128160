"""Generation: prompt set + generator -> image folder + manifest (resumable, sharded, deterministic)."""
