#!/usr/bin/env bash
# TEST-ONLY. Installs Apptainer on the Debian bookworm CI/test machine, which has none (not in
# bookworm, not on PyPI). Real clusters have Apptainer/Singularity already: do not use this there.
#
# Apptainer 1.4.x comes from Debian sid and needs glibc >= 2.38 (bookworm has 2.36), so the sid
# binaries are relocated under PREFIX and pointed at trixie's glibc with patchelf. Only the
# Debian mirror this machine's apt uses is contacted. Recipe and its pitfalls:
# /work/shared/notes/infrastructure.md section 4.
#
# Usage (root): containers/install-apptainer-test.sh [PREFIX]      (default /opt/apptainer-test)
# Then: export PATH=PREFIX/root/usr/bin:$PATH APPTAINER_USERNS=1
# (setuid mode fails here; user-namespace mode works. containers/build.sh --ci-workarounds and
# tests/workflow/test_container.py both look in /opt/apptainer-test.)
set -euo pipefail

P=${1:-/opt/apptainer-test}
die() { echo "install-apptainer-test.sh: error: $*" >&2; exit 1; }
[[ $(id -u) = 0 ]] || die "needs root (apt-get)"
command -v apt-get >/dev/null || die "needs a Debian system with apt-get"
[[ $(dpkg --print-architecture) = amd64 ]] || die "only amd64 is handled (glibc path below)"

if [[ -x $P/root/usr/bin/apptainer ]] && "$P/root/usr/bin/apptainer" --version >/dev/null 2>&1; then
    echo "already installed: $("$P/root/usr/bin/apptainer" --version) in $P"
    echo "export PATH=$P/root/usr/bin:\$PATH APPTAINER_USERNS=1"
    exit 0
fi

MIRROR=${MIRROR:-$(awk '/^URIs:/{print $2; exit}' /etc/apt/sources.list.d/debian.sources)}
[[ -n $MIRROR ]] || die "no Debian mirror found in /etc/apt/sources.list.d/debian.sources (set MIRROR)"

# squashfuse: running a .sif without re-executing the patched binary; uidmap: user namespaces.
apt-get install -y -q patchelf squashfs-tools squashfuse fuse2fs uidmap >/dev/null

# A private apt configuration that sees sid and trixie, without touching the system's sources.
A=$P/apt
mkdir -p "$A/lists/partial" "$A/cache/archives/partial" "$P/dl"
KR=/usr/share/keyrings/debian-archive-keyring.gpg
printf 'deb [signed-by=%s] %s sid main\ndeb [signed-by=%s] %s trixie main\n' "$KR" "$MIRROR" "$KR" "$MIRROR" \
    > "$A/sources.list"
O=(-o "Dir::Etc::SourceList=$A/sources.list" -o Dir::Etc::SourceParts=/dev/null
   -o "Dir::State::Lists=$A/lists" -o "Dir::Cache=$A/cache")
apt-get "${O[@]}" -q update >/dev/null
rm -f "$P"/dl/*.deb
(cd "$P/dl" && apt-get "${O[@]}" -q download apptainer/sid libc6/trixie 2>&1 | grep -v unsandboxed || true)
ls "$P"/dl/apptainer_*.deb "$P"/dl/libc6_*.deb >/dev/null 2>&1 || die "download of apptainer/sid or libc6/trixie failed"

rm -rf "$P/root" "$P/glibc"
dpkg-deb -x "$P"/dl/apptainer_*.deb "$P/root"
dpkg-deb -x "$P"/dl/libc6_*.deb "$P/glibc"
G=$P/glibc/usr/lib/x86_64-linux-gnu
for b in "$P/root/usr/bin/apptainer" "$P/root/usr/lib/x86_64-linux-gnu/apptainer/bin/starter"; do
    patchelf --set-interpreter "$G/ld-linux-x86-64.so.2" --set-rpath "$G:/lib/x86_64-linux-gnu" "$b"
done
# The relocated install looks for <prefix>/etc and <prefix>/lib/var.
ln -sfn ../etc "$P/root/usr/etc"
mkdir -p "$P/root/usr/lib/var/lib/apptainer/mnt/session"

"$P/root/usr/bin/apptainer" --version
echo "export PATH=$P/root/usr/bin:\$PATH APPTAINER_USERNS=1"
