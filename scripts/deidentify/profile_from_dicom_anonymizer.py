"""Write stages/deidentify/basic_profile.csv: DICOM PS3.15 Annex E Table E.1-1 (the
Basic Application Level Confidentiality Profile, 2024b), one row per attribute with
its action code, transcribed from dicom-anonymizer's database of that table
(dicomanonymizer/dicom_anonymization_databases/dicomfields_2024b.py, PyPI
dicom-anonymizer 2.1.0, which cites the table's URL). Attribute names come from
pydicom's data dictionary.

usage: python profile_from_dicom_anonymizer.py > stages/deidentify/basic_profile.csv
"""
import pydicom.datadict as dd
from dicomanonymizer.dicom_anonymization_databases import dicomfields_2024b as t

LISTS = [("D", "D_TAGS"), ("Z", "Z_TAGS"), ("X", "X_TAGS"), ("U", "U_TAGS"), ("Z/D", "Z_D_TAGS"),
         ("X/Z", "X_Z_TAGS"), ("X/D", "X_D_TAGS"), ("X/Z/D", "X_Z_D_TAGS"), ("X/Z/U*", "X_Z_U_STAR_TAGS")]
rows = {}
for action, name in LISTS:
    for tag in getattr(t, name):
        if len(tag) != 2:
            continue  # group-wide entries (curves, overlays) are handled by rule in pipe
        key = (tag[0], tag[1])
        assert key not in rows or rows[key] == action, (key, rows[key], action)
        rows[key] = action
print("# DICOM PS3.15 Annex E, Table E.1-1 (2024b): Basic Application Level Confidentiality Profile.")
print("# Transcribed by scripts/deidentify/profile_from_dicom_anonymizer.py from dicom-anonymizer 2.1.0;")
print("# actions: D dummy, Z empty, X remove, U new UID (keyed), and the standard's combinations.")
print("tag,action,name")
for (g, e), action in sorted(rows.items()):
    try:
        name = dd.dictionary_description((g << 16) | e)
    except KeyError:
        name = ""
    print(f"\"({g:04X},{e:04X})\",{action},\"{name}\"")
