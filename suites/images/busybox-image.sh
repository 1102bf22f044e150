#!/bin/sh
# Writes a one-layer container image holding Debian's busybox-static, in the
# `docker save` layout (manifest.json, the config, the layer tar) that both
# `docker load` and `ctr images import` read — no registry needed.
#   suites/images/busybox-image.sh OUT.tar [NAME:TAG]
# NAME:TAG defaults to testbed/busybox:latest.
set -eu
out=$1
tag=${2:-testbed/busybox:latest}
busybox=$(command -v busybox)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/rootfs/bin" "$work/rootfs/tmp" "$work/rootfs/etc" "$work/img"
cp "$busybox" "$work/rootfs/bin/busybox"
for applet in sh echo cat ls sleep true false env id hostname ping wget; do
  ln -s busybox "$work/rootfs/bin/$applet"
done
echo 'root:x:0:0:root:/:/bin/sh' > "$work/rootfs/etc/passwd"
# Fixed owners and times: the same busybox gives the same layer digest.
tar --sort=name --owner=0 --group=0 --numeric-owner --mtime=@0 \
  -C "$work/rootfs" -cf "$work/img/layer.tar" .
diff_id=sha256:$(sha256sum "$work/img/layer.tar" | cut -d' ' -f1)
cat > "$work/img/config.json" <<JSON
{"architecture":"amd64","os":"linux","created":"1970-01-01T00:00:00Z",
 "config":{"Env":["PATH=/bin"],"Cmd":["/bin/sh"],"Labels":{"org.testbed.image":"busybox-static"}},
 "rootfs":{"type":"layers","diff_ids":["$diff_id"]},
 "history":[{"created":"1970-01-01T00:00:00Z","created_by":"suites/images/busybox-image.sh"}]}
JSON
config=$(sha256sum "$work/img/config.json" | cut -d' ' -f1)
mv "$work/img/config.json" "$work/img/$config.json"
printf '[{"Config":"%s.json","RepoTags":["%s"],"Layers":["layer.tar"]}]\n' "$config" "$tag" > "$work/img/manifest.json"
tar --sort=name --owner=0 --group=0 --numeric-owner --mtime=@0 -C "$work/img" -cf "$out" .
