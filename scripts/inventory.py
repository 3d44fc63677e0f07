"""List the files under some folders as a Parquet table (used by the demo pipeline).

usage: inventory.py OUT.parquet DIR [DIR ...]
"""
import hashlib
import os
import sys

import pyarrow as pa
import pyarrow.parquet as pq

out, roots = sys.argv[1], sys.argv[2:]
rows = {"path": [], "folder": [], "extension": [], "bytes": [], "sha256": []}
for root in roots:
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(filenames):
            path = os.path.join(dirpath, name)
            with open(path, "rb") as f:
                digest = hashlib.sha256(f.read()).hexdigest()
            rows["path"].append(path)
            rows["folder"].append(root)
            rows["extension"].append(os.path.splitext(name)[1].lstrip(".") or "(none)")
            rows["bytes"].append(os.path.getsize(path))
            rows["sha256"].append(digest)
pq.write_table(pa.table(rows), out)
print(f"{len(rows['path'])} files")
