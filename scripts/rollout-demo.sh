#!/usr/bin/env bash
# The main job on the built-in local fleet: bring the fleet up on v1 (docker
# engine, offline image, 2 HAProxy balancers + 6 app hosts under systemd),
# then roll it to v2 with grayrelease.canary.rollout while a bounded load
# client sends traffic through lb1, and print the report's summary, the load
# client's failures and the versions served through each balancer.
# The rollout prints the progress view (grayrelease.canary.rollout_progress:
# a line per step and batch, weights, traffic share, analysis intervals,
# verdict, countdowns while it waits, summary), not the task stream.
#   make rollout                 # v1 -> v2
#   VERSION=v3 make rollout      # any other version name
#   RAW=1 make rollout           # Ansible's task stream, with the view beside it
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH=$PWD/.venv/bin:$PATH
version=${VERSION:-v2}
reports=${CANARY_REPORT_DIR:-$PWD/canary-reports}

scripts/ensure-host-packages.sh
scripts/ensure-docker.sh
scripts/build-images.sh
echo "== fleet: up and serving (molecule converge -s default)"
# Molecule remembers creating the fleet even when its containers were removed
# since (e.g. by a `molecule test` of a scenario with the same container
# names): then it would skip the create and converge nothing. Start over.
if ! docker inspect lb1 app1 >/dev/null 2>&1; then
  molecule destroy -s default >/dev/null
fi
molecule create -s default >/dev/null
molecule converge -s default >/dev/null
scripts/fleet-versions.sh || true

artifact=$(scripts/build-release.sh "$version" | tail -1)
[ -f "$artifact" ] || artifact=$PWD/dist/demoapp-$version.tar.gz
echo "== load: 30 req/s through lb1 for at most 15 minutes, until the rollout ends"
docker exec -i lb1 sh -c 'cat > /tmp/load.py' < scripts/load.py
docker exec lb1 rm -f /tmp/load.json /tmp/load.stop
docker exec -d lb1 python3 /tmp/load.py --url http://127.0.0.1/ --rate 30 --duration 900 \
  --stop-file /tmp/load.stop --out /tmp/load.json

echo "== rollout: $version"
export ANSIBLE_CALLBACKS_ENABLED=grayrelease.canary.rollout_progress
if [ -z "${RAW:-}" ]; then
  export ANSIBLE_STDOUT_CALLBACK=grayrelease.canary.rollout_progress
fi
start=$SECONDS
set +e
ANSIBLE_FORKS=10 ANSIBLE_DISPLAY_SKIPPED_HOSTS=false ansible-playbook -i inventory/local-fleet/hosts.yml \
  grayrelease.canary.rollout -e "canary_version=$version" -e "canary_artifact=$artifact" \
  -e "canary_report_dir=$reports"
rc=$?
set -e
wall=$((SECONDS - start))
docker exec lb1 touch /tmp/load.stop
for _ in $(seq 1 60); do docker exec lb1 test -s /tmp/load.json && break; sleep 0.5; done

echo
echo "== reports: $reports/report.html (timeline), report.md, report.json"
echo "   wall time of the playbook: $wall s"
echo "== load client (through lb1 during the rollout)"
docker exec lb1 cat /tmp/load.json
echo "== versions served now"
scripts/fleet-versions.sh || true
exit $rc
