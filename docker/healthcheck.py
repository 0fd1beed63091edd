#!/opt/faceid/bin/python
"""Container healthcheck: exit 0 only when GET /ready answers 200 (models loaded, database
reachable, gallery in sync with it). Standard library only."""

import os
import sys
import urllib.request

url = f"http://127.0.0.1:{os.environ.get('FACEID_PORT', '8000')}/ready"
try:
    with urllib.request.urlopen(url, timeout=5) as response:
        sys.exit(0 if response.status == 200 else 1)
except Exception as exc:  # 503 (not ready), refused, timeout
    print(f"{url}: {exc}", file=sys.stderr)
    sys.exit(1)
