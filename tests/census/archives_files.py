"""Archives and file handling: zipfile, tarfile, gzip/bz2/lzma, shutil copies, tempfile, glob, mmap, locks."""

import bz2
import fcntl
import glob
import gzip
import lzma
import mmap
import os
import pathlib
import shutil
import tarfile
import tempfile
import zipfile

pathlib.Path("src/sub").mkdir(parents=True, exist_ok=True)
for i in range(5):
    pathlib.Path(f"src/sub/f{i}.txt").write_text(f"line {i}\n" * 100)
with zipfile.ZipFile("src.zip", "w", zipfile.ZIP_DEFLATED) as z:
    for p in glob.glob("src/**/*.txt", recursive=True):
        z.write(p)
with zipfile.ZipFile("src.zip") as z:
    z.extractall("unzipped")
    print(len(z.namelist()))
with tarfile.open("src.tar.gz", "w:gz") as t:
    t.add("src")
with tarfile.open("src.tar.gz") as t:
    # extraction filters came with 3.11.4 (and 3.8.17 …): older runtimes extract as before
    t.extractall("untarred", **({"filter": "data"} if hasattr(tarfile, "data_filter") else {}))
for mod, ext in ((gzip, "gz"), (bz2, "bz2"), (lzma, "xz")):
    with mod.open(f"blob.{ext}", "wb") as fh:
        fh.write(b"x" * 100000)
    print(ext, len(mod.open(f"blob.{ext}").read()))
shutil.copy2("src/sub/f0.txt", "copy.txt")
shutil.copytree("src", "src2")
shutil.make_archive("archive", "zip", "src")
shutil.move("copy.txt", "moved.txt")
shutil.rmtree("src2")
print(shutil.disk_usage(".").total > 0, os.statvfs(".").f_bsize > 0)
with tempfile.TemporaryDirectory() as d, tempfile.NamedTemporaryFile(dir=d) as f:
    f.write(b"temp")
    f.flush()
    print(os.path.getsize(f.name))
with open("moved.txt", "r+b") as fh:
    fcntl.flock(fh, fcntl.LOCK_EX)
    with mmap.mmap(fh.fileno(), 0) as m:
        print(m[:6])
    fcntl.flock(fh, fcntl.LOCK_UN)
os.symlink("moved.txt", "link.txt")
print(os.readlink("link.txt"), sorted(os.listdir("."))[:3], sum(1 for _ in os.walk(".")))
os.chmod("moved.txt", 0o600)
os.utime("moved.txt", None)
os.rename("moved.txt", "renamed.txt")
os.remove("renamed.txt")
