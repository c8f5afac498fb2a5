# edgekit node bootstrap: build the node runtime (a venv) and switch it in atomically.
# Sent by `edgekit deploy` on stdin-free `sh -c`, with arguments:
#   ROOT FINGERPRINT PYTHON WHEELHOUSE MODE(index|offline) KEEP REQUIREMENT...
# The venv is built at ROOT/runtime-FINGERPRINT; ROOT/runtime is a symlink replaced by
# rename only after pip and an import check succeeded, so a failure never breaks the
# runtime in use. Runtimes other than the new one and KEEP (the previous) are removed.
set -eu
root="$1"; fp="$2"; py="$3"; house="$4"; mode="$5"; keep="$6"; shift 6
venv="$root/runtime-$fp"
rm -rf "$venv"
"$py" -m venv "$venv"
# --no-compile: pip would byte-compile every module of Ray and its dependencies; Python
# compiles (and caches) only the modules a service actually imports
pip="$venv/bin/python -m pip --disable-pip-version-check -q"
inst="install --no-compile"
whl=$(ls "$house"/edgekit-*.whl)
if [ "$mode" = offline ]; then
  $pip $inst --no-index --find-links "$house" "$@"
else
  $pip $inst "$@"
fi
$pip $inst --no-deps --no-index "$whl"
# the import check; a native library that is in the wheel but does not load (wrong arch,
# missing symbols) fails the install here instead of leaving the node on the numpy fallback
"$venv/bin/python" -c "import edgekit.node.supervisor, ray, onnxruntime, numpy, psutil
from edgekit.node.stack import check_loadable; check_loadable()"
echo "$fp" > "$venv/.edgekit-fingerprint"
ln -sfn "runtime-$fp" "$root/.runtime.tmp"
mv -T "$root/.runtime.tmp" "$root/runtime"
for d in "$root"/runtime-*; do
  if [ "$d" != "$venv" ] && [ "$d" != "$root/runtime-$keep" ]; then rm -rf -- "$d"; fi
done
