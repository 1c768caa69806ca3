#!/usr/bin/env bash
# Build the Debian package of oneshield-agent from an existing build:
#   BUILD=build packaging/build-deb.sh        (what "make deb" runs)
# -> $BUILD/oneshield-agent_<version>_<arch>.deb, its path on stdout.
#
# No debhelper: the tree is laid out here and packed with dpkg-deb
# --root-owner-group (every file root:root, no fakeroot needed). Depends
# comes from dpkg-shlibdeps over both ELF files, so the gRPC plugin's
# libraries (libgrpc29, libprotobuf-c1) are Depends, not Recommends: the
# shipped configuration enables the gRPC API, and the agent refuses to
# start when grpc_listen is set and the plugin cannot be loaded.
#
# The version is the one the binary reports (git describe --tags --always
# --dirty, or the Makefile's fallback 0.1.0), made a Debian version:
#   v1.2.3 -> 1.2.3    v1.2.3-4-gabc1234 -> 1.2.3+git4.gabc1234
#   v1.2.3-rc1 -> 1.2.3~rc1    abc1234 (no tag) -> 0~git<commits>.gabc1234
#   a "-dirty" suffix -> "+dirty"
# DEB_VERSION overrides it, DEB_MAINTAINER the maintainer (default: the
# author of the last commit).
set -euo pipefail
cd "$(dirname "$0")/.."

BUILD=${BUILD:-build}
PKG=oneshield-agent
AGENT=$BUILD/oneshield-agent
PLUGIN=$BUILD/oneshield-agent-grpc.so

die() { echo "build-deb: $*" >&2; exit 1; }
for f in "$AGENT" "$PLUGIN"; do
	[ -f "$f" ] || die "$f is missing (make BUILD=$BUILD agent plugin)"
done
for t in dpkg-deb dpkg-shlibdeps strip gzip; do
	command -v "$t" >/dev/null || die "$t not found (scripts/deps.sh installs dpkg-dev and binutils)"
done

deb_version() {
	local v=$1 suffix="" out
	if [[ $v == *-dirty ]]; then
		suffix="+dirty"
		v=${v%-dirty}
	fi
	if [[ $v =~ ^v?([0-9][A-Za-z0-9.+~-]*)-([0-9]+)-g([0-9a-f]+)$ ]]; then
		out="${BASH_REMATCH[1]//-/\~}+git${BASH_REMATCH[2]}.g${BASH_REMATCH[3]}"
	elif [[ $v =~ ^[0-9a-f]{7,40}$ ]]; then	# no tag: an abbreviated commit (before tags,
		# which may start with a digit too)
		out="0~git$(git rev-list --count "$v" 2>/dev/null || echo 0).g$v"
	elif [[ $v =~ ^v?([0-9][A-Za-z0-9.+~-]*)$ ]]; then
		out=${BASH_REMATCH[1]//-/\~}
	else
		die "cannot make a Debian version of \"$v\"; set DEB_VERSION"
	fi
	echo "$out$suffix"
}

agent_version=$("$AGENT" --version | awk '$1 == "oneshield-agent" { print $2 }')
[ -n "$agent_version" ] || die "$AGENT --version printed no version"
version=${DEB_VERSION:-$(deb_version "$agent_version")}
dpkg --validate-version "$version" >/dev/null 2>&1 || die "\"$version\" is not a valid Debian version"
arch=$(dpkg --print-architecture)
maintainer=${DEB_MAINTAINER:-$(git log -1 --format='%an <%ae>' 2>/dev/null || true)}
[ -n "$maintainer" ] || maintainer="oneshield-agent maintainers <root@localhost>"
# Dates in the man page and the changelog: the last commit's, so that two
# builds of one commit give the same files.
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || date +%s)}

work=$(realpath -m "$BUILD/deb")
root=$work/root
rm -rf "$work"
mkdir -p "$root/DEBIAN"
umask 022

# ---- files ----
install -D -m 0755 "$AGENT" "$root/usr/sbin/$PKG"
strip --remove-section=.comment --remove-section=.note "$root/usr/sbin/$PKG"
# dlopen'ed from here (userspace/grpc_plugin.c: PLUGIN_LIBDIR), only when
# root owns it and nobody else can write it; 0644 as Debian ships libraries.
install -D -m 0644 "$PLUGIN" "$root/usr/lib/$PKG/$PKG-grpc.so"
strip --remove-section=.comment --remove-section=.note --strip-unneeded "$root/usr/lib/$PKG/$PKG-grpc.so"

# The conffile: etc/agent.yaml with the onepanel section commented out, so
# a fresh install reports on the host only and manages no files until the
# operator names the server (and its directories in the unit's
# ReadWritePaths). Uncommenting it gives back etc/agent.yaml exactly.
install -d -m 0755 "$root/etc/$PKG"
awk '
	/^onepanel:/ {
		print "# ---- oneshield-agent package: the onepanel section is commented out ----"
		print "# Until it names a server the agent reports on the host only and changes"
		print "# no file. To manage one: remove the leading \"#\" of the lines below (the"
		print "# values are an example for Debian'"'"'s nginx), adapt them, allow the agent to"
		print "# write its directories (systemctl edit oneshield-agent, see"
		print "# oneshield-agent(8): ReadWritePaths=), then systemctl restart oneshield-agent."
		print "# ---- end of package note ----"
		inside = 1
	}
	inside && /^[A-Za-z]/ && !/^onepanel:/ { inside = 0 }
	inside && !/^[[:space:]]*(#|$)/ { print "#" $0; next }
	{ print }
' etc/agent.yaml > "$root/etc/$PKG/agent.yaml"
chmod 0640 "$root/etc/$PKG/agent.yaml"
echo "/etc/$PKG/agent.yaml" > "$root/DEBIAN/conffiles"

install -D -m 0644 packaging/$PKG.service "$root/lib/systemd/system/$PKG.service"

date_man=$(date -u -d "@$SOURCE_DATE_EPOCH" +%Y-%m-%d)
install -d -m 0755 "$root/usr/share/man/man8"
sed -e "s/@VERSION@/$agent_version/g" -e "s/@DATE@/$date_man/g" man/$PKG.8 \
	| gzip -9n > "$root/usr/share/man/man8/$PKG.8.gz"

doc=$root/usr/share/doc/$PKG
install -D -m 0644 packaging/copyright "$doc/copyright"
gzip -9n < README.md > "$doc/README.md.gz"
{
	echo "$PKG ($version) unstable; urgency=medium"
	echo
	echo "  * Built from $agent_version."
	echo
	echo " -- $maintainer  $(LC_ALL=C date -u -R -d "@$SOURCE_DATE_EPOCH")"
} | gzip -9n > "$doc/changelog.gz"   # a native package: not changelog.Debian
chmod 0644 "$doc"/*.gz "$root/usr/share/man/man8/$PKG.8.gz"

# The conffile is 0640 on purpose: it is where API credentials will go
# (issue 8 §1), and dpkg keeps the mode of a locally modified conffile, so
# it could not be tightened later where it matters.
install -d -m 0755 "$root/usr/share/lintian/overrides"
echo "$PKG: non-standard-file-perm 0640 != 0644 [etc/$PKG/agent.yaml]" \
	> "$root/usr/share/lintian/overrides/$PKG"
chmod 0644 "$root/usr/share/lintian/overrides/$PKG"

for s in postinst prerm postrm; do
	install -m 0755 "packaging/debian/$s" "$root/DEBIAN/$s"
done

# ---- control ----
# dpkg-shlibdeps wants a debian/control to read; give it a minimal one.
shl=$work/shlibs
mkdir -p "$shl/debian"
printf 'Source: %s\n\nPackage: %s\nArchitecture: any\n' "$PKG" "$PKG" > "$shl/debian/control"
# --warnings=6: keep "useless dependency" warnings, drop "symbol not found"
# for the plugin, which resolves the agent's own symbols from the executable.
depends=$(cd "$shl" && dpkg-shlibdeps --warnings=6 -O \
	"$root/usr/sbin/$PKG" "$root/usr/lib/$PKG/$PKG-grpc.so" \
	| sed -n 's/^shlibs:Depends=//p')
[ -n "$depends" ] || die "dpkg-shlibdeps found no dependencies"

installed_size=$(du -sk --exclude=DEBIAN "$root" | cut -f1)
cat > "$root/DEBIAN/control" <<EOF
Package: $PKG
Version: $version
Architecture: $arch
Maintainer: $maintainer
Installed-Size: $installed_size
Depends: $depends
Suggests: nginx
Section: admin
Priority: optional
Description: agent beside a server process: config management, metrics, events
 oneshield-agent runs beside onepanel, a server process with a config file,
 access and error logs and a reload signal (Debian's nginx fits the shape),
 and lets a control system, curl or Prometheus watch and manage it:
  - configuration management: submitted files are validated, written
    atomically, reloaded with a signal, verified and rolled back on failure;
  - metrics of the host, the server process, its logs and, through eBPF,
    its scheduler delay and system calls (REST/JSON, Prometheus, gRPC);
  - events (server found, stopped, reloaded, config applied, panics) as a
    journal with sequence numbers, SSE and gRPC streams.
 The APIs listen on loopback and have no authentication yet.
EOF

(cd "$root" && find . -path ./DEBIAN -prune -o -type f -printf '%P\n' | LC_ALL=C sort \
	| grep -vxF "etc/$PKG/agent.yaml" | xargs -d '\n' md5sum) > "$root/DEBIAN/md5sums"
chmod 0644 "$root/DEBIAN/control" "$root/DEBIAN/conffiles" "$root/DEBIAN/md5sums"

out=$BUILD/${PKG}_${version}_${arch}.deb
dpkg-deb --root-owner-group -Zxz --build "$root" "$out" >/dev/null
echo "$out"
