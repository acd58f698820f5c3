"""The Cozystack platform stage: manifests, the install flow and its verification."""
