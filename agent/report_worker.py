"""`python -m agent.report_worker`: one report-input worker process (agent.report_inputs).

Started and ended by `InputPool`; reads pickled requests on stdin, writes answers on stdout.
"""

from __future__ import annotations

import sys

from agent.report_inputs import serve

if __name__ == "__main__":
    serve(sys.stdin.buffer, sys.stdout.buffer)
