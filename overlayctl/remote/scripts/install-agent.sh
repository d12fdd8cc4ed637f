# The agent phase: install the agent offline from an uploaded wheelhouse.
# $1 upload dir (holds the wheels and unpack_wheels.py), $2 AGENT_HOME, $3 digest; stdin: sha256sum
# lines of everything uploaded. The wheelhouse holds exactly one version of each distribution, so
# there is nothing to resolve: a fresh venv (without pip) gets every wheel unpacked into it by
# unpack_wheels.py (no .data/ folders in the agent's wheels: checked; pip's own wheel skipped), then
# replaces the old venv. Several times cheaper in CPU than pip, which counts when ten hosts install
# at once.
set -eu
src=$1; home=$2; digest=$3
(cd "$src" && sha256sum --check --quiet --strict -)
mkdir -p "$home"
rm -rf "$home/wheelhouse" "$home/venv.new" "$home/venv.old"
mkdir "$home/wheelhouse"
cp "$src"/*.whl "$home/wheelhouse/"
python3 -m venv --without-pip "$home/venv.new"
"$home/venv.new/bin/python" "$src/unpack_wheels.py" "$home/venv" "$home"/wheelhouse/*.whl
[ -d "$home/venv" ] && mv "$home/venv" "$home/venv.old"
mv "$home/venv.new" "$home/venv"
rm -rf "$home/venv.old" "$src"
printf '%s\n' "$digest" > "$home/wheelhouse.sha256"
