"""`provisioner up`: from powered-off servers to a formed management cluster.

Read it top to bottom in ``run.py``; each node is walked through ``nodeflow.py``'s
state machine, the cluster through ``clusterflow.py``; ``locks.py`` keeps two runs
off the same rack, ``progress.py`` shows where each node stands.
"""
