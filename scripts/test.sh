#!/usr/bin/env bash
# Installs what the test suite needs and runs it. Used by the README and by .ci/run.
# As root (CI), Debian's elixir and erlang-jiffy are installed for the real BEAM client test.
set -euo pipefail
cd "$(dirname "$0")/.."

have_beam() {
  command -v elixir >/dev/null 2>&1 && ls -d /usr/lib/erlang/lib/jiffy-* >/dev/null 2>&1
}

if ! have_beam || ! command -v tmux >/dev/null 2>&1; then
  if [ "$(id -u)" = "0" ]; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends elixir erlang-jiffy tmux >/dev/null
  else
    echo "note: elixir/erlang-jiffy missing; run as root or: sudo apt-get install elixir erlang-jiffy" >&2
  fi
fi

python3 -m pip install -q --disable-pip-version-check --root-user-action=ignore -e ".[test]"
# The suite must never reach the internet (DSPy's price list download is off too).
export LITELLM_LOCAL_MODEL_COST_MAP=True
# CI also runs the tests marked slow (optimizers); a developer's default run skips them.
if [ -n "${CI:-}" ]; then export DSPEX_SLOW=1; fi
exec python3 -m pytest -q --durations=25 "$@"
