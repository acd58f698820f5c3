"""The work of ``up``'s hardware stages (the stages themselves: ``provisioner/pipeline/``).

``nodeflow.py`` walks one node through its phases, ``clusterflow.py`` forms the cluster,
``reset.py`` wipes nodes and keeps the records true; ``bmcgate.py`` (every BMC command of a
run), ``talos_ops.py`` (the machine API, the test seam for a fake) and ``locks.py`` /
``progress.py`` (two runs never drive the same rack; where each stage and node stands).
Nothing here imports the pipeline that assembles it.
"""
