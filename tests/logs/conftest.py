"""The fake Execution API fixtures of tests/api, for TIs run end to end in tests/logs."""

from tests.api.conftest import (  # noqa: F401 (fixtures)
    celery_message_args,
    client,
    fake,
    run_context,
    transcript,
    waits,
    workload,
)
