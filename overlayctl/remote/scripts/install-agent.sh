# The agent phase: install the agent offline from an uploaded wheelhouse.
# $1 upload dir (holds the wheels and unpack_wheels.py), $2 AGENT_HOME, $3 digest; stdin: sha256sum
# lines of everything uploaded, from overlayctl's lock (the agent's wheel: from its build). The
# wheelhouse holds exactly one version of each distribution, so there is nothing to resolve: a
# fresh venv (without pip) gets every wheel checked against its RECORD, then unpacked into it, by
# unpack_wheels.py (a wheel that does not match stops the install before anything is unpacked),
# then it replaces the old venv and is byte-compiled (the agent's unit may not write its venv:
# ProtectSystem=strict). Several times cheaper in CPU than pip, which counts when ten hosts
# install at once.
set -eu
src=$1; home=$2; digest=$3
(cd "$src" && sha256sum --check --quiet --strict -)
mkdir -p "$home"
rm -rf "$home/wheelhouse" "$home/venv.new" "$home/venv.old"
mkdir "$home/wheelhouse"
cp "$src"/*.whl "$home/wheelhouse/"
python3 -m venv --without-pip "$home/venv.new"
if ! "$home/venv.new/bin/python" "$src/unpack_wheels.py" "$home/venv" "$home"/wheelhouse/*.whl; then
    rm -rf "$home/venv.new" "$home/wheelhouse" "$src"
    exit 1
fi
[ -d "$home/venv" ] && mv "$home/venv" "$home/venv.old"
mv "$home/venv.new" "$home/venv"
# One process: a pool of workers (-j 0) cost more to start than the fifty files take to compile.
"$home/venv/bin/python" -m compileall -q "$home/venv/lib" >/dev/null
rm -rf "$home/venv.old" "$src"
printf '%s\n' "$digest" > "$home/wheelhouse.sha256"
