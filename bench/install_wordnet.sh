#!/usr/bin/env bash
# Installs WordNet 3.0 (Debian's wordnet-base) for the benchmark corpus; run as root.
# Idempotent: does nothing when the data files are already there.
set -euo pipefail

if [[ -f /usr/share/wordnet/data.noun ]]; then
    echo "WordNet already installed under /usr/share/wordnet"
    exit 0
fi

apt-get update
apt-get install -y wordnet-base
test -f /usr/share/wordnet/data.noun
echo "WordNet installed under /usr/share/wordnet"
