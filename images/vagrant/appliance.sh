#!/bin/sh
# The Vagrant lab's appliance (run by the Vagrantfile's provisioner, as root): puts in place what
# was uploaded (the groundwork binary, the answer file, the key to the targets), then converges
# the site and checks it. `vagrant up` and `vagrant provision` fail when either fails.
#
# usage: appliance.sh UPLOAD_DIR ANSWERS_PATH KEY_PATH STATE_DIR
set -eu
upload=$1 answers=$2 key=$3 state=$4

install -D -m 755 "$upload/groundwork" /usr/local/bin/groundwork
install -D -m 644 "$upload/answers.toml" "$answers"
install -d -m 700 "$(dirname "$key")"
install -m 600 "$upload/id_ed25519" "$key"
rm -rf "$upload"

echo "groundwork apply --yes $answers"
groundwork apply --yes "$answers" --state "$state"
echo "groundwork verify $answers"
groundwork verify "$answers" --state "$state"
