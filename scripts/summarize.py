"""Count files and bytes per folder and extension (used by the demo pipeline).

usage: summarize.py IN.parquet OUT.parquet
"""
import sys

import pyarrow.parquet as pq
import pyarrow as pa

table = pq.read_table(sys.argv[1])
summary = table.group_by(["folder", "extension"]).aggregate([("bytes", "sum"), ("path", "count")])
summary = summary.rename_columns(["folder", "extension", "bytes", "files"]).sort_by([("folder", "ascending"), ("extension", "ascending")])
pq.write_table(summary, sys.argv[2])
print(summary.to_pandas().to_string(index=False))
