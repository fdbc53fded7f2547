# feedlock.bbclass: every apt source of the build goes through one feedlock
# environment, so all images of a build (and of later builds, until reset)
# get the same package versions; each image gets a version manifest.
#
# Use: INHERIT += "feedlock" in local.conf (the class must be inherited
# globally: bitbake sends BuildStarted/BuildCompleted only to global classes).
#
# The class only sets variables and calls `feedlock hook ...` /
# `feedlock manifest ...`; the behaviour lives in feedlock's src/bitbake-hooks.

# How to run feedlock (a command line; e.g. "node /path/to/feedlock/dist/src/cli/bin.cjs")
FEEDLOCK_BIN ?= "feedlock"
# Package store shared by builds (may be on NFS)
FEEDLOCK_DIR ?= "${DL_DIR}/feedlock"
# Per-build state: port, pid, log; and the snapshot records unless FEEDLOCK_SNAPSHOT_DIR says otherwise
FEEDLOCK_STATE_DIR ?= "${TMPDIR}/feedlock"
# Snapshot records: with the store by default; set to "${FEEDLOCK_STATE_DIR}/snapshots" for per-build indices
FEEDLOCK_SNAPSHOT_DIR ?= "${FEEDLOCK_DIR}/snapshots"
# Preferred port; a free one is chosen before parsing if it is taken
FEEDLOCK_PORT ?= "3142"
# Build environment: images built with the same environment share versions
FEEDLOCK_ENV ?= "${@feedlock_default_env(d)}"
# Pin: a snapshot id or tag, or the path of a feedlock.lock (empty: follow the environment)
FEEDLOCK_SNAPSHOT ?= ""
# "1": serve only from the store (pairs with BB_NO_NETWORK)
FEEDLOCK_OFFLINE ?= "0"
# An already running shared feedlock (e.g. http://cache.example.org:3142): start nothing
FEEDLOCK_URL ?= ""
# Further `feedlock serve` arguments (e.g. "--keyring /path/archive.gpg --fallback URL")
FEEDLOCK_SERVE_ARGS ?= ""
# Manifest formats written beside each image
FEEDLOCK_MANIFEST_FORMATS ?= "json text spdx"
# Token file for a shared daemon's admin API (build records); the class's own server makes its own
FEEDLOCK_ADMIN_TOKEN ?= ""

def feedlock_default_env(d):
    import re
    parts = [d.getVar('DISTRO') or 'distro', d.getVar('DISTRO_ARCH') or d.getVar('MACHINE') or 'any']
    return re.sub(r'[^A-Za-z0-9._-]', '-', '-'.join(parts))[:64]

def feedlock_cmd(d, *args):
    import shlex
    return shlex.split(d.getVar('FEEDLOCK_BIN')) + list(args)

def feedlock_store_args(d):
    return ['--store', d.getVar('FEEDLOCK_DIR'), '--snapshot-dir', d.getVar('FEEDLOCK_SNAPSHOT_DIR')]

def feedlock_port(d):
    # Read at expansion time from the state dir (written by `hook port` when the
    # configuration is parsed), so cached recipes and task workers always agree.
    path = os.path.join(d.getVar('FEEDLOCK_STATE_DIR'), 'port')
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return d.getVar('FEEDLOCK_PORT')

def feedlock_base_url(d):
    url = d.getVar('FEEDLOCK_URL')
    if url:
        return url.rstrip('/')
    return 'http://127.0.0.1:%s' % feedlock_port(d)

# Where apt sources point: the environment is part of the URL, so every
# chroot, bootstrap and rootfs apt call lands in the same environment.
FEEDLOCK_SOURCE_BASE = "${@feedlock_base_url(d)}/_env/${FEEDLOCK_ENV}"

# Isar: its apt snapshot mechanism rewrites every apt source at parse time and
# marks it [check-valid-until=no], which a pinned environment needs once the
# pinned Release passes its Valid-Until (Debian security: after 7 days).
# Isar splits each entry on whitespace: the regexes must not contain spaces.
ISAR_USE_APT_SNAPSHOT = "1"
DISTRO_APT_SNAPSHOT_PREMIRROR = "https://([^/]+)/ ${FEEDLOCK_SOURCE_BASE}/https/\1/\nhttp://([^/]+)/ ${FEEDLOCK_SOURCE_BASE}/\1/\n"

# OpenEmbedded: remote ipk feeds that do_rootfs installs from (IPK_FEED_URIS,
# "name##uri ...") go through feedlock's host-remap form in the environment.
def feedlock_feed_uris(d, value):
    import re
    base = d.getVar('FEEDLOCK_SOURCE_BASE')
    out = []
    for item in (value or '').split():
        name, sep, uri = item.partition('##')
        if not sep:
            name, uri = '', item
        m = re.match(r'^(https?)://(.+)$', uri)
        if m and not uri.startswith(base):
            uri = '%s/%s%s' % (base, 'https/' if m.group(1) == 'https' else '', m.group(2))
        out.append('%s##%s' % (name, uri) if sep else uri)
    return ' '.join(out)

python () {
    feeds = d.getVar('IPK_FEED_URIS')
    if feeds:
        d.setVar('IPK_FEED_URIS', feedlock_feed_uris(d, feeds))
}

addhandler feedlock_config_parsed
feedlock_config_parsed[eventmask] = "bb.event.ConfigParsed"
python feedlock_config_parsed() {
    # The port must be known while recipes parse; `hook port` picks it once per build.
    import subprocess
    if d.getVar('IMAGE_PKGTYPE') == 'ipk' and not d.getVar('IPK_FEED_URIS'):
        # Said once per build, not per task: OE installs from its own deploy feed here.
        bb.note('feedlock: this build installs packages from its own deploy feed (IPK_FEED_URIS is empty), so nothing is fetched through feedlock; manifests are still written')
    if d.getVar('FEEDLOCK_URL'):
        return
    try:
        subprocess.check_output(feedlock_cmd(d, 'hook', 'port', '--state-dir', d.getVar('FEEDLOCK_STATE_DIR'), '--port', d.getVar('FEEDLOCK_PORT')), text=True)
    except (OSError, subprocess.CalledProcessError) as e:
        bb.fatal('feedlock: cannot choose a port (%s); is FEEDLOCK_BIN = "%s" right?' % (e, d.getVar('FEEDLOCK_BIN')))
}

addhandler feedlock_build_started
feedlock_build_started[eventmask] = "bb.event.BuildStarted"
python feedlock_build_started() {
    import subprocess
    args = ['hook', 'start', '--state-dir', d.getVar('FEEDLOCK_STATE_DIR'), '--port', feedlock_port(d), '--env', d.getVar('FEEDLOCK_ENV')] + feedlock_store_args(d)
    if d.getVar('FEEDLOCK_URL'):
        args += ['--url', d.getVar('FEEDLOCK_URL')]
    pin = d.getVar('FEEDLOCK_SNAPSHOT')
    if pin:
        args += ['--lock-file', pin] if os.path.exists(pin) else ['--snapshot', pin]
    if bb.utils.to_boolean(d.getVar('FEEDLOCK_OFFLINE')):
        args.append('--offline')
    extra = (d.getVar('FEEDLOCK_SERVE_ARGS') or '').split()
    if extra:
        args += ['--'] + extra
    try:
        url = subprocess.check_output(feedlock_cmd(d, *args), text=True, stderr=subprocess.STDOUT).strip()
    except subprocess.CalledProcessError as e:
        bb.fatal('feedlock: could not start: %s' % e.output.strip())
    bb.note('feedlock: environment %s served at %s' % (d.getVar('FEEDLOCK_ENV'), url))
}

addhandler feedlock_build_completed
feedlock_build_completed[eventmask] = "bb.event.BuildCompleted bb.event.CookerExit"
python feedlock_build_completed() {
    # BuildCompleted fires once per multiconfig plus once for the build: stop once.
    # CookerExit covers Ctrl-C and a failing build. Stopping twice is harmless.
    import subprocess
    if isinstance(e, bb.event.BuildCompleted) and d.getVar('BB_CURRENT_MC') not in (None, '', 'default'):
        return
    subprocess.call(feedlock_cmd(d, 'hook', 'stop', '--state-dir', d.getVar('FEEDLOCK_STATE_DIR')), stdout=subprocess.DEVNULL)
}

# ---- per image: manifest ------------------------------------------------------

# "1" for recipes that build an image (Isar and OE images inherit "image").
FEEDLOCK_IMAGE ?= "${@'1' if bb.data.inherits_class('image', d) else '0'}"

python () {
    # Only images get the manifest task (Isar sets IMAGE_ROOTFS globally, so it cannot tell).
    if not bb.utils.to_boolean(d.getVar('FEEDLOCK_IMAGE')) or not d.getVar('IMAGE_ROOTFS'):
        return
    tasks = d.getVar('__BBTASKS', False) or []
    after = [t for t in ('do_rootfs_postprocess', 'do_rootfs') if t in tasks][:1]
    before = [t for t in ('do_image',) if t in tasks] or ['do_build']
    bb.build.addtask('do_feedlock_manifest', ' '.join(before), ' '.join(after), d)
    # Bracket the rootfs tasks with a build record of every package file served.
    first = [t for t in ('do_rootfs_install', 'do_rootfs') if t in tasks][:1]
    if first:
        d.appendVarFlag(first[0], 'prefuncs', ' feedlock_build_open')
}

def feedlock_build_args(d):
    import re
    args = ['--state-dir', d.getVar('FEEDLOCK_STATE_DIR'), '--name', re.sub(r'[^A-Za-z0-9._-]', '-', d.getVar('FEEDLOCK_MANIFEST_BASENAME'))[:64]]
    if d.getVar('FEEDLOCK_ADMIN_TOKEN'):
        args += ['--admin-token', d.getVar('FEEDLOCK_ADMIN_TOKEN')]
    return args

python feedlock_build_open() {
    # A record left open by an interrupted run of this task is closed first.
    import subprocess
    subprocess.call(feedlock_cmd(d, 'hook', 'build-close', *feedlock_build_args(d)), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        subprocess.check_output(feedlock_cmd(d, 'hook', 'build-open', '--env', d.getVar('FEEDLOCK_ENV'), *feedlock_build_args(d)), text=True, stderr=subprocess.STDOUT)
    except subprocess.CalledProcessError as e:
        bb.warn('feedlock: no build record for this image: %s' % e.output.strip())
}

FEEDLOCK_MANIFEST_BASENAME ?= "${@d.getVar('IMAGE_FULLNAME') or d.getVar('PN')}"

# Closing the build record talks to feedlock on loopback; bitbake >= 2.0 cuts
# the network of tasks that do not ask for it.
do_feedlock_manifest[network] = "1"

python do_feedlock_manifest() {
    import subprocess
    deploy = d.getVar('DEPLOY_DIR_IMAGE')
    bb.utils.mkdirhier(deploy)
    base = os.path.join(deploy, d.getVar('FEEDLOCK_MANIFEST_BASENAME'))
    record = '%s.feedlock-downloads.json' % base
    try:
        out = subprocess.check_output(feedlock_cmd(d, 'hook', 'build-close', '--out', record, *feedlock_build_args(d)), text=True, stderr=subprocess.STDOUT)
        bb.note('feedlock: %s; wrote %s' % (out.strip(), record))
    except subprocess.CalledProcessError as e:
        bb.note('feedlock: no build record closed: %s' % e.output.strip())
    ext = {'json': 'feedlock.json', 'text': 'feedlock.manifest', 'spdx': 'feedlock.spdx.json', 'cyclonedx': 'feedlock.cdx.json', 'sha256sum': 'feedlock.sha256sum'}
    for fmt in (d.getVar('FEEDLOCK_MANIFEST_FORMATS') or 'json').split():
        out = '%s.%s' % (base, ext.get(fmt, fmt))
        cmd = feedlock_cmd(d, 'manifest', '--rootfs', d.getVar('IMAGE_ROOTFS'), '--env', d.getVar('FEEDLOCK_ENV'), '--format', fmt, '--out', out) + feedlock_store_args(d)
        try:
            subprocess.check_output(cmd, text=True, stderr=subprocess.STDOUT)
        except subprocess.CalledProcessError as e:
            bb.fatal('feedlock manifest failed: %s' % e.output.strip())
        bb.note('feedlock: wrote %s' % out)
}

# ---- user tasks ---------------------------------------------------------------

python do_feedlock_reset() {
    import subprocess
    env = d.getVar('FEEDLOCK_ENV')
    out = subprocess.check_output(feedlock_cmd(d, 'env', 'reset', env) + feedlock_store_args(d), text=True)
    bb.plain(out.strip())
    bb.plain('feedlock: the next build captures the current upstream state; then run: bitbake -c feedlock_diff %s' % d.getVar('PN'))
}
do_feedlock_reset[nostamp] = "1"
addtask feedlock_reset

python do_feedlock_diff() {
    import subprocess, json
    env = d.getVar('FEEDLOCK_ENV')
    show = json.loads(subprocess.check_output(feedlock_cmd(d, 'env', 'show', env, '--json') + feedlock_store_args(d), text=True))
    snaps = [h['snapshot'] for h in show.get('history', []) if h.get('snapshot')]
    if len(snaps) < 2 or snaps[-1] == snaps[-2]:
        bb.plain('feedlock: environment %s has no earlier snapshot to compare with' % env)
        return
    bb.plain(subprocess.check_output(feedlock_cmd(d, 'snapshot', 'diff', snaps[-2], snaps[-1]) + feedlock_store_args(d), text=True).strip())
}
do_feedlock_diff[nostamp] = "1"
addtask feedlock_diff

FEEDLOCK_LOCK_FILE ?= "${TOPDIR}/feedlock.lock"
python do_feedlock_lock() {
    import subprocess
    out = subprocess.check_output(feedlock_cmd(d, 'snapshot', 'lock', d.getVar('FEEDLOCK_ENV'), '--out', d.getVar('FEEDLOCK_LOCK_FILE')) + feedlock_store_args(d), text=True)
    bb.plain(out.strip() + '; commit it to a layer and set FEEDLOCK_SNAPSHOT = "<path to it>"')
}
do_feedlock_lock[nostamp] = "1"
addtask feedlock_lock
