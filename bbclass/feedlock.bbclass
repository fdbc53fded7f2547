# feedlock.bbclass: every apt and opkg download of the build goes through one
# feedlock environment, so all images of a build (and of later builds, until
# reset) get the same package versions; each image gets a version manifest.
#
# The product does not change: feedlock is reached as a forward proxy, set
# only in configuration that the build removes before the image is packed
# (a bootstrap hook file, the rootfs's temporary apt.conf.d file, http_proxy
# in the environment of OE's do_rootfs). Apt sources, package lists and the
# apt configuration in the image are those of a build without this class.
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
# Manifest formats written beside each image (any `feedlock manifest --format` name)
FEEDLOCK_MANIFEST_FORMATS ?= "json text spdx"
# Repositories `bitbake -c feedlock_reset` resets (as `feedlock env show` lists them, or a unique suite suffix such as bookworm-security); empty: all
FEEDLOCK_RESET_REPOS ?= ""
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

def feedlock_state_file(d, name, default):
    # Read at expansion time from the state dir (written by `hook port` when the
    # configuration is parsed), so cached recipes and task workers always agree.
    try:
        with open(os.path.join(d.getVar('FEEDLOCK_STATE_DIR'), name)) as f:
            return f.read().strip() or default
    except OSError:
        return default

def feedlock_port(d):
    return feedlock_state_file(d, 'port', d.getVar('FEEDLOCK_PORT'))

def feedlock_build_env(d):
    # The build's own environment, derived from FEEDLOCK_ENV at each build's start
    # (a shared daemon serves FEEDLOCK_ENV itself).
    if d.getVar('FEEDLOCK_URL'):
        return d.getVar('FEEDLOCK_ENV')
    return feedlock_state_file(d, 'env', d.getVar('FEEDLOCK_ENV'))

def feedlock_snapshot_hosts(d):
    # Isar's snapshot mode rewrites every apt source to the snapshot archive's
    # /archive/<archive>/<date>/ URLs (DISTRO_APT_SNAPSHOT_PREMIRROR). feedlock
    # answers that host's URLs from its archive view (the environment's
    # generation current at that date) and never contacts it; the host is the
    # user's setting, read unexpanded (its date part needs Isar's bootstrap
    # class, and Isar's default writes it as inline python with spaces).
    import re
    if not bb.utils.to_boolean(d.getVar('ISAR_USE_APT_SNAPSHOT')):
        return []
    hosts = []
    for entry in (d.getVar('DISTRO_APT_SNAPSHOT_PREMIRROR', False) or '').split('\\n'):
        words = entry.split(None, 1)
        m = re.match(r'(?:https?://)?([^/\s]+)/', words[1]) if len(words) == 2 else None
        host = d.expand(m.group(1)).lower() if m else None
        if host and host not in hosts:
            hosts.append(host)
    return hosts

def feedlock_proxy_url(d):
    # Forward-proxy form: the environment is the proxy user name, the sources stay as they are.
    import re
    url = (d.getVar('FEEDLOCK_URL') or 'http://127.0.0.1:%s' % feedlock_port(d)).rstrip('/')
    return re.sub(r'^(https?://)', r'\g<1>%s@' % d.getVar('FEEDLOCK_BUILD_ENV'), url)

FEEDLOCK_BUILD_ENV = "${@feedlock_build_env(d)}"
# What apt and opkg are pointed at; it never reaches a file of the image.
FEEDLOCK_PROXY = "${@feedlock_proxy_url(d)}"
# The temporary apt configuration (written when the configuration is parsed):
# the proxy, and no Valid-Until check (a pinned environment keeps serving the
# Release it captured; Debian security's expires 7 days after its Date).
FEEDLOCK_APT_CONF = "${FEEDLOCK_STATE_DIR}/apt.conf"
FEEDLOCK_APT_CONF_FILE = "/etc/apt/apt.conf.d/00feedlock-build"

# Isar, do_bootstrap: mmdebstrap runs under sudo, which drops the environment.
# The file is there from the first setup hook to the last customize hook (so
# it covers every apt call of the bootstrap) and is not in the tarball.
MMOPTS:append = " --setup-hook='upload "${FEEDLOCK_APT_CONF}" ${FEEDLOCK_APT_CONF_FILE}' --customize-hook='rm -f "$1${FEEDLOCK_APT_CONF_FILE}"'"

# Isar, every rootfs (images, sbuild and SDK chroots): the same file while
# packages are installed, removed again by the last postprocess command.
ROOTFS_CONFIGURE_COMMAND:append = " feedlock_rootfs_apt_config"
ROOTFS_POSTPROCESS_COMMAND:append = " feedlock_rootfs_apt_cleanup"
feedlock_rootfs_apt_config() {
    sudo install -D -m 644 '${FEEDLOCK_APT_CONF}' '${ROOTFSDIR}${FEEDLOCK_APT_CONF_FILE}'
}
feedlock_rootfs_apt_cleanup() {
    sudo rm -f '${ROOTFSDIR}${FEEDLOCK_APT_CONF_FILE}'
}

# OpenEmbedded (and other classes whose do_rootfs runs apt or opkg itself):
# http_proxy for that task only. opkg (libcurl) and apt honour it; the feeds
# written into the image (PACKAGE_FEED_URIS, IPK_FEED_URIS) stay as they are.
python feedlock_export_proxy() {
    proxy = d.getVar('FEEDLOCK_PROXY')
    for v in ('http_proxy', 'HTTP_PROXY'):
        os.environ[v] = proxy
}
python () {
    # Isar's rootfs tasks use the apt configuration above; elsewhere the image's do_rootfs gets the variable.
    if not bb.data.inherits_class('rootfs', d) and 'do_rootfs' in (d.getVar('__BBTASKS', False) or []):
        d.appendVarFlag('do_rootfs', 'prefuncs', ' feedlock_export_proxy')
}

addhandler feedlock_config_parsed
feedlock_config_parsed[eventmask] = "bb.event.ConfigParsed"
python feedlock_config_parsed() {
    # The port must be known while recipes parse; `hook port` picks it once per build.
    import subprocess
    if d.getVar('IMAGE_PKGTYPE') == 'ipk' and not d.getVar('IPK_FEED_URIS'):
        # Said once per build, not per task: OE installs from its own deploy feed here.
        bb.note('feedlock: this build installs packages from its own deploy feed (IPK_FEED_URIS is empty), so nothing is fetched through feedlock; manifests are still written')
    state = d.getVar('FEEDLOCK_STATE_DIR')
    if not d.getVar('FEEDLOCK_URL'):
        try:
            subprocess.check_output(feedlock_cmd(d, 'hook', 'port', '--state-dir', state, '--port', d.getVar('FEEDLOCK_PORT'), '--env', d.getVar('FEEDLOCK_ENV')), text=True, stderr=subprocess.STDOUT)
        except (OSError, subprocess.CalledProcessError) as e:
            bb.fatal('feedlock: cannot choose a port (%s); is FEEDLOCK_BIN = "%s" right?' % (getattr(e, 'output', None) or e, d.getVar('FEEDLOCK_BIN')))
    bb.utils.mkdirhier(state)
    conf = 'Acquire::http::Proxy "%s";\nAcquire::Check-Valid-Until "false";\n' % d.getVar('FEEDLOCK_PROXY')
    tmp = '%s.%d' % (d.getVar('FEEDLOCK_APT_CONF'), os.getpid())
    with open(tmp, 'w') as f:
        f.write(conf)
    os.replace(tmp, d.getVar('FEEDLOCK_APT_CONF'))
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
    # This handler runs in the bitbake server; its client is the bitbake command.
    # When either ends, even by SIGKILL, the server goes with them.
    args += ['--watch-pid', str(os.getpid())] + ([str(os.getppid())] if os.getppid() > 1 else [])
    extra = (d.getVar('FEEDLOCK_SERVE_ARGS') or '').split() + [a for h in feedlock_snapshot_hosts(d) for a in ('--snapshot-host', h)]
    if extra:
        args += ['--'] + extra
    try:
        out = subprocess.run(feedlock_cmd(d, *args), text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE, check=True)
    except subprocess.CalledProcessError as e:
        bb.fatal('feedlock: could not start: %s' % (e.stderr or e.stdout).strip())
    if out.stderr.strip():
        bb.note(out.stderr.strip())
    bb.note('feedlock: environment %s (build environment %s) served at %s' % (d.getVar('FEEDLOCK_ENV'), d.getVar('FEEDLOCK_BUILD_ENV'), out.stdout.strip()))
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
        subprocess.check_output(feedlock_cmd(d, 'hook', 'build-open', '--env', d.getVar('FEEDLOCK_BUILD_ENV'), *feedlock_build_args(d)), text=True, stderr=subprocess.STDOUT)
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
    ext = {'json': 'feedlock.json', 'text': 'feedlock.manifest', 'spdx': 'feedlock.spdx.json', 'spdx3': 'feedlock.spdx3.json', 'cyclonedx': 'feedlock.cdx.json', 'sha256sum': 'feedlock.sha256sum'}
    # The snapshot this build was served (its build environment's), named after the shared environment.
    which = ['--env', d.getVar('FEEDLOCK_ENV')]
    if not d.getVar('FEEDLOCK_URL'):
        import json
        try:
            build = json.loads(subprocess.check_output(feedlock_cmd(d, 'hook', 'env', '--state-dir', d.getVar('FEEDLOCK_STATE_DIR'), '--json') + feedlock_store_args(d), text=True, stderr=subprocess.STDOUT))
        except subprocess.CalledProcessError as e:
            bb.fatal('feedlock: cannot read the build environment: %s' % e.output.strip())
        if build.get('snapshot'):
            which += ['--snapshot', build['snapshot']]
    for fmt in (d.getVar('FEEDLOCK_MANIFEST_FORMATS') or 'json').split():
        # Any format name goes to `feedlock manifest --format`, which says which it knows.
        out = '%s.%s' % (base, ext.get(fmt, 'feedlock.' + fmt))
        cmd = feedlock_cmd(d, 'manifest', '--rootfs', d.getVar('IMAGE_ROOTFS'), *which, '--format', fmt, '--out', out) + feedlock_store_args(d)
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
    # One reset: only the named repositories (suites) are captured afresh, the rest stay pinned.
    args = [a for r in (d.getVar('FEEDLOCK_RESET_REPOS') or '').split() for a in ('--repo', r)]
    # The shared environment is reset; builds running now keep their own until they end.
    try:
        out = subprocess.check_output(feedlock_cmd(d, 'env', 'reset', env, *args) + feedlock_store_args(d), text=True, stderr=subprocess.STDOUT)
    except subprocess.CalledProcessError as e:
        bb.fatal('feedlock env reset %s %s failed: %s' % (env, ' '.join(args), e.output.strip()))
    bb.plain(out.strip())
    bb.plain('feedlock: the next build captures the current upstream state; then run: bitbake -c feedlock_diff %s' % d.getVar('PN'))
}
do_feedlock_reset[nostamp] = "1"
addtask feedlock_reset

python do_feedlock_diff() {
    # What changed between the environment's previous generation and its current one.
    import subprocess
    try:
        out = subprocess.check_output(feedlock_cmd(d, 'env', 'diff', d.getVar('FEEDLOCK_ENV')) + feedlock_store_args(d), text=True, stderr=subprocess.STDOUT)
    except subprocess.CalledProcessError as e:
        bb.fatal('feedlock env diff failed: %s' % e.output.strip())
    bb.plain(out.strip())
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
