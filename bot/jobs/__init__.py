"""Labeling jobs once planned: launched exactly once (`launcher`), watched until they end
(`watcher`), and followed by more rounds on their least certain frames (`relabel`, by the policy
in `adaptive`)."""
