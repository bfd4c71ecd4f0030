#!/usr/bin/env bash
# Build the demo app's container image offline from what the fleet host has
# (python3 and its libraries, no registry) and save it as a docker-archive:
#   build-image.sh VERSION CRASH(true|false) APP_PY OUT_DIR
# The rootfs is python3.11, the shared libraries it and its extension modules
# need, the standard library (without tests), and /app/{app.py,release.json}.
set -euo pipefail
version=$1 crash=$2 app=$3 out=$4
root=$(mktemp -d)
chmod 0755 "$root"
trap 'rm -rf "$root"' EXIT
mkdir -p "$root/usr/bin" "$root/app" "$root/tmp" "$root/etc"
chmod 1777 "$root/tmp"
cp /usr/bin/python3.11 "$root/usr/bin/python3"
libs() { ldd "$@" 2>/dev/null | awk '/=> \// {print $3} /^\t\// {print $1}' | sort -u; }
for lib in $(libs /usr/bin/python3.11 /usr/lib/python3.11/lib-dynload/*.so); do
  [ -e "$root$lib" ] || { mkdir -p "$root$(dirname "$lib")"; cp -L "$lib" "$root$lib"; }
done
tar -C / --exclude=__pycache__ --exclude=test --exclude=idlelib --exclude=tkinter --exclude=ensurepip \
  --exclude=lib2to3 --exclude=pydoc_data -cf - usr/lib/python3.11 | tar -C "$root" -xf -
install -m 0755 "$app" "$root/app/app.py"
printf '{"version": "%s", "crash_on_start": %s}\n' "$version" "$crash" > "$root/app/release.json"
printf 'root:x:0:0::/:/bin/false\nnobody:x:65534:65534::/:/bin/false\n' > "$root/etc/passwd"
printf 'root:x:0:\nnogroup:x:65534:\n' > "$root/etc/group"
tar -C "$root" --numeric-owner -c . \
  | podman import -q --change 'CMD=["/usr/bin/python3","/app/app.py","--port","8080"]' - "localhost/demoapp:$version" >/dev/null
mkdir -p "$out"
rm -f "$out/demoapp-$version.tar"
podman save -q --format docker-archive -o "$out/demoapp-$version.tar" "localhost/demoapp:$version"
podman image inspect --format '{{.Id}}' "localhost/demoapp:$version"
