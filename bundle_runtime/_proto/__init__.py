"""Generated gRPC and protobuf code for proto/. Do not edit.

Regenerate with `python scripts/gen_proto.py`; tests/test_proto.py fails when this is stale.
Only bundle_runtime.server/service and supervisor.plugin.client import these modules.
"""
