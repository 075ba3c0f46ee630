// End-to-end tests under a real Apache 2.4: the echo example as public_html/mysite.fcgi
// behind mod_fcgid (site root and /blog/) and mod_cgid (/cgi/), with the .htaccess files
// from htaccess/ copied verbatim, spoken to over plain HTTP/1.1.

use std::fs;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::util::*;

const MODULE_DIR: &str = "/usr/lib/apache2/modules";

/// (module identifier, file): loaded unless compiled in (Debian builds some in).
const MODULES: &[(&str, &str)] = &[
    ("mpm_event_module", "mod_mpm_event.so"),
    ("unixd_module", "mod_unixd.so"),
    ("log_config_module", "mod_log_config.so"),
    ("authz_core_module", "mod_authz_core.so"),
    ("mime_module", "mod_mime.so"),
    ("dir_module", "mod_dir.so"),
    ("env_module", "mod_env.so"),
    ("rewrite_module", "mod_rewrite.so"),
    ("fcgid_module", "mod_fcgid.so"),
    ("cgid_module", "mod_cgid.so"),
];

fn apache_binary() -> PathBuf {
    let found = ["/usr/sbin/apache2", "/usr/sbin/httpd"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists());
    let bin =
        found.expect("Apache 2.4 is not installed (apt-get install apache2 libapache2-mod-fcgid)");
    let fcgid = Path::new(MODULE_DIR).join("mod_fcgid.so");
    assert!(
        fcgid.exists(),
        "{} is missing (apt-get install libapache2-mod-fcgid)",
        fcgid.display()
    );
    bin
}

/// Where Debian's suEXEC (`apache2-suexec-pristine`) runs programs: under this folder only.
const SUEXEC_DOC_ROOT: &str = "/var/www";
const SUEXEC: &str = "/usr/lib/apache2/suexec";

/// A site's own user, as a shared host gives each customer one; created once (as a
/// system user: suEXEC refuses uids and gids below 100, which a system user is not).
struct SiteUser {
    name: &'static str,
    uid: u32,
    gid: u32,
}

impl SiteUser {
    fn get() -> &'static SiteUser {
        static USER: std::sync::OnceLock<SiteUser> = std::sync::OnceLock::new();
        USER.get_or_init(|| {
            let name = "fcgi-shim-site";
            assert!(
                Path::new(SUEXEC).exists(),
                "{SUEXEC} is missing (apt-get install apache2-suexec-pristine)"
            );
            // Exit status 9: the user is there already (an earlier run).
            let st = Command::new("useradd")
                .args(["--system", "--user-group", "--no-create-home"])
                .args([
                    "--home-dir",
                    "/nonexistent",
                    "--shell",
                    "/usr/sbin/nologin",
                    name,
                ])
                .status()
                .expect("run useradd");
            assert!(st.success() || st.code() == Some(9), "useradd {name}: {st}");
            let (uid, gid) = user_ids(name);
            SiteUser { name, uid, gid }
        })
    }

    fn chown(&self, path: &Path) {
        std::os::unix::fs::chown(path, Some(self.uid), Some(self.gid)).unwrap();
    }
}

/// The real uid of a running process.
fn uid_of(pid: u32) -> u32 {
    proc_status_field(pid, "Uid:").expect("the process's uid") as u32
}

/// A real Apache in the foreground, in its own process group, with everything (config,
/// docroot, logs, sockets) in a temp dir:
///
/// - `public_html/`: mysite.fcgi + htaccess/fcgid-root.htaccess, and robots.txt
/// - `public_html/blog/`: mysite.fcgi + htaccess/fcgid-subdir.htaccess
/// - `public_html/cgi/`: mysite.fcgi + htaccess/cgi-fallback.htaccess
struct Apache {
    child: Option<Child>,
    port: u16,
    robots: String,
    // Last: removed after Apache has stopped.
    dir: TempDir,
}

impl Apache {
    fn start() -> Apache {
        Apache::start_app("echo", None)
    }

    /// Starts on `port`, or on a free port when `None`.
    fn start_on(port: Option<u16>) -> Apache {
        Apache::start_app("echo", port)
    }

    /// Serves example `app` (as mysite.fcgi in each directory).
    fn start_app(app: &str, port: Option<u16>) -> Apache {
        Apache::start_with(app, port, None, "")
    }

    /// The echo example through suEXEC (`SuexecUserGroup`), as shared hosts run their
    /// customers' programs: the site (under suEXEC's docroot, `/var/www`) belongs to
    /// `user`, and mod_fcgid and mod_cgid start the programs as that user.
    fn start_suexec(user: &SiteUser) -> Apache {
        Apache::start_with("echo", None, Some(user), "")
    }

    /// The echo example with `extra` lines in the server configuration (directives an
    /// `.htaccess` may not hold, such as `AllowEncodedSlashes`).
    fn start_with_config(extra: &str) -> Apache {
        Apache::start_with("echo", None, None, extra)
    }

    /// The echo example under Debian's stock module set, as a Debian or Ubuntu host runs
    /// Apache: every `/etc/apache2/mods-enabled/*.load` (mod_deflate with its
    /// `AddOutputFilterByType DEFLATE text/html text/plain ...`, mod_reqtimeout,
    /// mod_negotiation, mod_setenvif, mod_status, mod_autoindex, mod_alias, ...) and
    /// every `*.conf` there, after the test's own configuration. Each `LoadModule` goes
    /// under an `<IfModule !...>` guard, as `config` loads its own, so that none is loaded
    /// twice. The `.conf` files name no `${APACHE_...}` variable (Debian's envvars), only
    /// system paths (`/etc/mime.types`, `/usr/share/apache2/icons`); coming last, their
    /// server-wide settings win: Debian's `TypesConfig /etc/mime.types`, and its
    /// mpm_event sizes (`MaxRequestWorkers 150`, cut to 50 by `ServerLimit 2`, AH00515).
    fn start_stock() -> Apache {
        let dir = Path::new("/etc/apache2/mods-enabled");
        let mut loads: Vec<PathBuf> = fs::read_dir(dir)
            .unwrap_or_else(|e| panic!("{}: {e} (apt-get install apache2)", dir.display()))
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == "load"))
            .collect();
        loads.sort();
        let mut extra = String::new();
        for p in loads {
            for line in fs::read_to_string(p).unwrap().lines() {
                if let ["LoadModule", id, _] = line.split_whitespace().collect::<Vec<_>>()[..] {
                    extra += &format!("<IfModule !{id}>\n  {line}\n</IfModule>\n");
                }
            }
        }
        extra += &format!("IncludeOptional {}/*.conf\n", dir.display());
        Apache::start_with_config(&extra)
    }

    fn start_with(app: &str, port: Option<u16>, suexec: Option<&SiteUser>, extra: &str) -> Apache {
        let bin = apache_binary();
        let mut last_failure = String::new();
        // A free port can be taken by someone else before Apache binds it: retry then.
        for _ in 0..5 {
            let mut a = Apache::spawn(&bin, app, port, suexec, extra);
            let deadline = Instant::now() + Duration::from_secs(20);
            loop {
                if a.answers() {
                    return a;
                }
                let exited = a.child.as_mut().unwrap().try_wait().unwrap();
                if exited.is_some() || Instant::now() > deadline {
                    last_failure = format!(
                        "Apache did not come up on port {} ({exited:?}):\n{}",
                        a.port,
                        a.logs()
                    );
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let in_use = last_failure.contains("Address already in use");
            a.stop(true);
            if !in_use || port.is_some() {
                break;
            }
        }
        panic!("{last_failure}");
    }

    fn spawn(
        bin: &Path,
        app: &str,
        port: Option<u16>,
        suexec: Option<&SiteUser>,
        extra: &str,
    ) -> Apache {
        let dir = match suexec {
            Some(_) => TempDir::new_in(Path::new(SUEXEC_DOC_ROOT), "apache"),
            None => TempDir::new("apache"),
        };
        let root = dir.path().to_path_buf();
        for d in [
            "run",
            "logs",
            "fcgid",
            "public_html/blog",
            "public_html/cgi",
        ] {
            fs::create_dir_all(root.join(d)).unwrap();
        }
        // Everything www-data reads is under a world-readable dir; what it writes is its own.
        for d in ["public_html", "public_html/blog", "public_html/cgi", "logs"] {
            fs::set_permissions(root.join(d), fs::Permissions::from_mode(0o755)).unwrap();
        }
        if is_root() {
            let (uid, gid) = www_data();
            for d in ["run", "fcgid"] {
                std::os::unix::fs::chown(root.join(d), Some(uid), Some(gid)).unwrap();
            }
        }
        let exe = example(app);
        let htaccess = Path::new(env!("CARGO_MANIFEST_DIR")).join("htaccess");
        for (sub, file) in [
            ("public_html", "fcgid-root.htaccess"),
            ("public_html/blog", "fcgid-subdir.htaccess"),
            ("public_html/cgi", "cgi-fallback.htaccess"),
        ] {
            let target = root.join(sub).join("mysite.fcgi");
            fs::copy(&exe, &target).unwrap();
            fs::set_permissions(&target, fs::Permissions::from_mode(0o755)).unwrap();
            let ht = root.join(sub).join(".htaccess");
            fs::copy(htaccess.join(file), &ht).unwrap();
            fs::set_permissions(&ht, fs::Permissions::from_mode(0o644)).unwrap();
        }
        // Unique per instance, so the readiness check cannot be fooled by another server.
        let robots = format!("User-agent: *\nDisallow:\n# {}\n", root.display());
        let robots_path = root.join("public_html/robots.txt");
        fs::write(&robots_path, &robots).unwrap();
        fs::set_permissions(&robots_path, fs::Permissions::from_mode(0o644)).unwrap();
        if let Some(user) = suexec {
            // suEXEC runs a program only when it and its folder belong to the user.
            for sub in ["public_html", "public_html/blog", "public_html/cgi"] {
                user.chown(&root.join(sub));
                user.chown(&root.join(sub).join("mysite.fcgi"));
            }
        }

        let port = port.unwrap_or_else(free_port);
        let conf = root.join("httpd.conf");
        let mut text = config(&root, port);
        if let Some(user) = suexec {
            text += &format!(
                "<IfModule !suexec_module>\n  LoadModule suexec_module {MODULE_DIR}/mod_suexec.so\n</IfModule>\nSuexecUserGroup {0} {0}\n# suEXEC passes a fixed list of variables: this one must not reach the app.\nFcgidInitialEnv FORCE_SCRIPT_NAME /from-initial-env\n",
                user.name
            );
        }
        text += &extra.replace("{ROOT}", &root.display().to_string());
        fs::write(&conf, text).unwrap();
        let out = fs::File::create(root.join("logs/stdout.log")).unwrap();
        let mut cmd = Command::new(bin);
        // SAFETY: only close_range(2), async-signal-safe, between fork and exec. Other
        // tests' threads may hold descriptors without CLOEXEC at the moment we fork:
        // Apache (and the apps it starts) must not keep those open.
        unsafe {
            cmd.pre_exec(|| {
                libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32);
                // If the test runner dies, Apache shuts down (and stops its apps) too.
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
                Ok(())
            });
        }
        let child = cmd
            .arg("-f")
            .arg(&conf)
            .arg("-DFOREGROUND")
            .env_clear()
            .env(
                "PATH",
                "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            )
            .env("LANG", "C")
            .stdin(Stdio::null())
            .stdout(Stdio::from(out.try_clone().unwrap()))
            .stderr(Stdio::from(out))
            .process_group(0)
            .spawn()
            .expect("start apache2");
        Apache {
            child: Some(child),
            port,
            robots,
            dir,
        }
    }

    /// Ready: our own robots.txt comes back from the port.
    fn answers(&self) -> bool {
        let addr = SocketAddr::from(([127, 0, 0, 1], self.port));
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
            return false;
        }
        let t = Duration::from_secs(2);
        try_http_request(self.port, "GET", "/robots.txt", &[], Body::None, t)
            .is_ok_and(|r| r.status == 200 && r.body == self.robots.as_bytes())
    }

    fn pid(&self) -> i32 {
        self.child.as_ref().expect("Apache was stopped").id() as i32
    }

    fn get(&self, target: &str) -> Response {
        http_request(self.port, "GET", target, &[], Body::None)
    }

    fn request(
        &self,
        method: &str,
        target: &str,
        headers: &[(&str, &str)],
        body: Body,
    ) -> Response {
        http_request(self.port, method, target, headers, body)
    }

    /// `http://127.0.0.1:PORT`, as the client (and so the Host header) names the server.
    fn origin(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn error_log(&self) -> String {
        String::from_utf8_lossy(&fs::read(self.dir.join("logs/error.log")).unwrap_or_default())
            .into_owned()
    }

    /// Waits until the error log contains `needle`.
    fn error_log_has(&self, needle: &str, timeout: Duration) -> bool {
        wait_until(timeout, || self.error_log().contains(needle))
    }

    fn logs(&self) -> String {
        let read = |p: &str| {
            String::from_utf8_lossy(&fs::read(self.dir.join(p)).unwrap_or_default()).into_owned()
        };
        format!(
            "--- apache stdout/stderr ---\n{}--- error.log ---\n{}--- access.log ---\n{}",
            read("logs/stdout.log"),
            read("logs/error.log"),
            read("logs/access.log")
        )
    }

    /// A graceful stop (what `apachectl -k graceful-stop` sends): stop listening, let
    /// the requests in flight finish, then exit.
    fn graceful_stop(&self) {
        signal(self.pid(), libc::SIGWINCH);
    }

    /// Stops Apache (SIGTERM unless it is already on its way out), waits for it, then
    /// for every process of its group (mod_fcgid's and mod_cgid's children included).
    /// Returns the processes that had to be killed because they did not exit by
    /// themselves, and whether Apache itself had to be killed.
    fn stop(&mut self, signal_first: bool) -> (bool, Vec<String>) {
        let Some(mut child) = self.child.take() else {
            return (false, Vec::new());
        };
        let pgid = child.id() as i32;
        if signal_first && child.try_wait().unwrap().is_none() {
            signal(pgid, libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut killed = false;
        while child.try_wait().unwrap().is_none() {
            if Instant::now() > deadline {
                signal(-pgid, libc::SIGKILL);
                killed = true;
                let _ = child.wait();
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        // SAFETY: kill with signal 0 only checks whether the group has members.
        let group_empty = || unsafe { libc::kill(-pgid, 0) } != 0;
        if wait_until(Duration::from_secs(5), group_empty) {
            return (killed, Vec::new());
        }
        let left = group_members(pgid);
        signal(-pgid, libc::SIGKILL);
        wait_until(Duration::from_secs(5), group_empty);
        (killed, left)
    }
}

impl Drop for Apache {
    fn drop(&mut self) {
        let (killed, left) = self.stop(true);
        if std::thread::panicking() {
            eprintln!("{}", self.logs());
        } else if killed || !left.is_empty() {
            panic!(
                "Apache did not stop cleanly (killed: {killed}); processes left over: {left:?}\n{}",
                self.logs()
            );
        }
    }
}

fn config(root: &Path, port: u16) -> String {
    let r = root.display();
    let mut c = format!(
        r#"ServerRoot "{r}"
DefaultRuntimeDir "{r}/run"
PidFile "{r}/run/httpd.pid"
Mutex file:{r}/run default
Listen 127.0.0.1:{port}
ServerName 127.0.0.1
"#
    );
    for (id, file) in MODULES {
        c += &format!("<IfModule !{id}>\n  LoadModule {id} {MODULE_DIR}/{file}\n</IfModule>\n");
    }
    if is_root() {
        c += "User www-data\nGroup www-data\n";
    }
    c += &format!(
        r#"StartServers 1
ServerLimit 2
ThreadsPerChild 16
MaxRequestWorkers 32
MinSpareThreads 4
MaxSpareThreads 32
GracefulShutdownTimeout 10
Timeout 30
ErrorLog "{r}/logs/error.log"
LogLevel info fcgid:debug
LogFormat "%h \"%r\" %>s %b %Dus" timed
CustomLog "{r}/logs/access.log" timed
TypesConfig /dev/null
AddType text/plain .txt
ScriptSock "{r}/run/cgid.sock"
FcgidIPCDir "{r}/fcgid"
FcgidProcessTableFile "{r}/fcgid/table"
# One process per app, so consecutive requests meet the same process.
FcgidMaxProcessesPerClass 1
# The default (128 KiB) would refuse the 5 MiB upload.
FcgidMaxRequestLen 16777216
FcgidZombieScanInterval 1
FcgidIOTimeout 30
DocumentRoot "{r}/public_html"
<Directory />
  AllowOverride None
  Require all denied
</Directory>
<Directory "{r}/public_html">
  # As hardened shared hosts set it (cPanel's default, without FollowSymLinks), and
  # stricter still: no AuthConfig, so a `Require` in an .htaccess would be a 500.
  AllowOverride FileInfo Indexes Limit Options=ExecCGI,Includes,IncludesNOEXEC,Indexes,MultiViews,SymLinksIfOwnerMatch
  Require all granted
</Directory>
"#
    );
    c
}

// ---- the tests ----

/// The pid in an echo answer.
fn pid_of(j: &Value) -> u32 {
    j["pid"].as_u64().expect("pid") as u32
}

#[test]
fn fcgid_at_site_root() {
    let a = Apache::start();
    let j = a.get("/posts/1?x=1&y=two").echo();
    assert_eq!(j["mode"], "fastcgi", "{j}");
    assert_eq!(j["method"], "GET", "{j}");
    assert_eq!(j["script_name"], "", "{j}");
    assert_eq!(j["path_info"], "/posts/1", "{j}");
    assert_eq!(j["uri"], "/posts/1?x=1&y=two", "{j}");
    assert_eq!(j["query"], "x=1&y=two", "{j}");
    assert_eq!(j["original_uri"], "/posts/1?x=1&y=two", "{j}");
    assert_eq!(j["remote_addr"], "127.0.0.1", "{j}");
    assert_eq!(j["https"], false, "{j}");

    let j = a.get("/").echo();
    assert_eq!(j["path_info"], "/", "{j}");
    assert_eq!(j["script_name"], "", "{j}");
    assert_eq!(j["uri"], "/", "{j}");
    assert_eq!(j["original_uri"], "/", "{j}");

    // A real file is Apache's, not the app's.
    let r = a.get("/robots.txt");
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.text(), a.robots);
    assert_eq!(r.header("content-type"), Some("text/plain"), "{r:?}");
}

#[test]
fn fcgid_in_subdirectory() {
    let a = Apache::start();
    let j = a.get("/blog/posts/1?x=1").echo();
    assert_eq!(j["mode"], "fastcgi", "{j}");
    assert_eq!(j["script_name"], "/blog", "{j}");
    assert_eq!(j["path_info"], "/posts/1", "{j}");
    assert_eq!(j["uri"], "/posts/1?x=1", "{j}");
    assert_eq!(j["query"], "x=1", "{j}");
    assert_eq!(j["original_uri"], "/blog/posts/1?x=1", "{j}");

    let j = a.get("/blog/").echo();
    assert_eq!(j["script_name"], "/blog", "{j}");
    assert_eq!(j["path_info"], "/", "{j}");
    assert_eq!(j["uri"], "/", "{j}");

    // Without the slash, mod_dir's DirectorySlash answers first (mod_rewrite leaves a
    // directory without its trailing slash alone), as fcgid-subdir.htaccess says.
    let r = a.get("/blog");
    assert_eq!(r.status, 301, "{r:?}");
    assert_eq!(
        r.header("location"),
        Some(format!("{}/blog/", a.origin()).as_str()),
        "{r:?}"
    );
    let r = a.get("/blog?x=1");
    assert_eq!(r.status, 301, "{r:?}");
    assert_eq!(
        r.header("location"),
        Some(format!("{}/blog/?x=1", a.origin()).as_str()),
        "{r:?}"
    );

    let j = a.get("/blog/caf%C3%A9/a%20b").echo();
    assert_eq!(j["script_name"], "/blog", "{j}");
    assert_eq!(j["path_info"], "/café/a b", "{j}");
    assert_eq!(j["uri"], "/caf%C3%A9/a%20b", "{j}");
    assert_eq!(j["original_uri"], "/blog/caf%C3%A9/a%20b", "{j}");

    let j = a.get("/blog//double//slash").echo();
    assert_eq!(j["script_name"], "/blog", "{j}");
    assert_eq!(j["path_info"], "/double/slash", "{j}");
    assert_eq!(j["uri"], "/double/slash", "{j}");

    // The script's own URL: the mount prefix is the script itself.
    let j = a.get("/blog/mysite.fcgi/direct").echo();
    assert_eq!(j["script_name"], "/blog/mysite.fcgi", "{j}");
    assert_eq!(j["path_info"], "/direct", "{j}");
    assert_eq!(j["uri"], "/direct", "{j}");
}

/// Apache 2.4.56 and later refuse a decoded `?` in a rewritten path (403, AH10508) and
/// a decoded `%` makes the rewritten path invalid (400, AH10244), so with the shipped
/// rule an app cannot receive `/what%3F` or `/100%25`. The README's fix, `B=?%#` in the
/// rule's flags, escapes those characters again: checked here on the real Apache, with
/// the shipped rule beside it for contrast.
#[test]
fn fcgid_rewrite_with_escaped_backreferences_routes_encoded_characters() {
    let a = Apache::start();
    let shipped = fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("htaccess/fcgid-subdir.htaccess"),
    )
    .unwrap();
    assert!(shipped.contains("[QSA,L]"));
    let dir = a.dir.path().join("public_html/enc");
    fs::create_dir_all(&dir).unwrap();
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
    let exe = echo_site(&dir);
    fs::set_permissions(&exe, fs::Permissions::from_mode(0o755)).unwrap();
    let ht = dir.join(".htaccess");
    fs::write(&ht, shipped.replace("[QSA,L]", "[B=?%#,QSA,L]")).unwrap();
    fs::set_permissions(&ht, fs::Permissions::from_mode(0o644)).unwrap();

    for (path, want) in [
        ("/what%3F", "/what?"),
        ("/100%25", "/100%"),
        ("/a%23b", "/a#b"),
        ("/caf%C3%A9/a%20b", "/café/a b"),
        ("/posts/1", "/posts/1"),
        ("/", "/"),
    ] {
        let j = a.get(&format!("/enc{path}?x=1")).echo();
        assert_eq!(j["script_name"], "/enc", "{path}: {j}");
        assert_eq!(j["path_info"], want, "{path}: {j}");
        assert_eq!(j["query"], "x=1", "{path}: {j}");
    }
    // The shipped rule, for contrast: these two do not reach the app.
    assert_eq!(a.get("/blog/what%3F").status, 403);
    assert_eq!(a.get("/blog/100%25").status, 400);
    // And a %23 reaches it cut (PATH_INFO=/a, no QUERY_STRING), which the app repairs
    // from REQUEST_URI.
    let j = a.get("/blog/a%23b?x=1").echo();
    assert_eq!(j["vars"]["PATH_INFO"], "/a", "{j}");
    assert_eq!(j["script_name"], "/blog", "{j}");
    assert_eq!(j["path_info"], "/a#b", "{j}");
    assert_eq!(j["query"], "x=1", "{j}");
    assert_eq!(j["uri"], "/a%23b?x=1", "{j}");
    assert_eq!(j["mount_source"], "CutByRewrite", "{j}");
    // A %25 before two hex digits is decoded twice (PATH_INFO=/100A): repaired from
    // REQUEST_URI too.
    let j = a.get("/blog/100%2541?x=1").echo();
    assert_eq!(j["vars"]["PATH_INFO"], "/100A", "{j}");
    assert_eq!(j["script_name"], "/blog", "{j}");
    assert_eq!(j["path_info"], "/100%41", "{j}");
    assert_eq!(j["query"], "x=1", "{j}");
    assert_eq!(j["mount_source"], "ScriptFolder", "{j}");
}

/// The shipped rule's two repairs at once (a `%25XX` before a `%23`: Apache cuts at the
/// `#` and decodes what is left twice, `PATH_INFO=/A`, the query lost), and both under
/// the template's optional `SetEnv FORCE_SCRIPT_NAME` line.
#[test]
fn fcgid_shipped_rule_repairs_together_and_under_force_script_name() {
    let a = Apache::start();
    for (target, prefix) in [("/blog/%2541%23?q=1", "/blog"), ("/%2541%23?q=1", "")] {
        let j = a.get(target).echo();
        assert_eq!(j["vars"]["PATH_INFO"], "/A", "{target}: {j}");
        assert_eq!(j["script_name"], prefix, "{target}: {j}");
        assert_eq!(j["path_info"], "/%41#", "{target}: {j}");
        assert_eq!(j["uri"], "/%2541%23?q=1", "{target}: {j}");
        assert_eq!(j["query"], "q=1", "{target}: {j}");
        assert_eq!(j["mount_source"], "CutByRewrite", "{target}: {j}");
    }

    let shipped = fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("htaccess/fcgid-subdir.htaccess"),
    )
    .unwrap();
    let line = "# SetEnv FORCE_SCRIPT_NAME /blog";
    assert!(shipped.contains(line));
    let dir = a.dir.path().join("public_html/forced");
    fs::create_dir_all(&dir).unwrap();
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
    let exe = echo_site(&dir);
    fs::set_permissions(&exe, fs::Permissions::from_mode(0o755)).unwrap();
    let ht = dir.join(".htaccess");
    fs::write(
        &ht,
        shipped.replace(line, "SetEnv FORCE_SCRIPT_NAME /forced"),
    )
    .unwrap();
    fs::set_permissions(&ht, fs::Permissions::from_mode(0o644)).unwrap();
    for (target, sent, path, uri, query) in [
        (
            "/forced/100%2520off",
            "/100 off",
            "/100%20off",
            "/100%2520off",
            "",
        ),
        (
            "/forced/100%2541?x=1",
            "/100A",
            "/100%41",
            "/100%2541?x=1",
            "x=1",
        ),
        ("/forced/a%23b?x=1", "/a", "/a#b", "/a%23b?x=1", "x=1"),
        (
            "/forced/%2541%23?q=1",
            "/A",
            "/%41#",
            "/%2541%23?q=1",
            "q=1",
        ),
        (
            "/forced/posts/1?x=1",
            "/posts/1",
            "/posts/1",
            "/posts/1?x=1",
            "x=1",
        ),
    ] {
        let j = a.get(target).echo();
        assert_eq!(j["vars"]["PATH_INFO"], sent, "{target}: {j}");
        assert_eq!(j["vars"]["FORCE_SCRIPT_NAME"], "/forced", "{target}: {j}");
        assert_eq!(j["script_name"], "/forced", "{target}: {j}");
        assert_eq!(j["path_info"], path, "{target}: {j}");
        assert_eq!(j["uri"], uri, "{target}: {j}");
        assert_eq!(j["query"], query, "{target}: {j}");
    }
}

/// `AllowEncodedSlashes NoDecode` (the value Apache's docs advise over `On`) leaves a
/// client's `%2F` as it is in `PATH_INFO` and `REDIRECT_URL` (and mod_rewrite decodes a
/// `%252F` into the same `%2F`): the app sees what it sees under `On`, the client's
/// encoding in the URI and the path decoded, and a `%252F` stays apart.
#[test]
fn fcgid_and_cgi_with_allow_encoded_slashes_nodecode() {
    let a = Apache::start_with_config("AllowEncodedSlashes NoDecode\n");
    let j = a.get("/blog/files/a%2Fb").echo();
    assert_eq!(j["vars"]["PATH_INFO"], "/files/a%2Fb", "{j}");
    for (target, script, path, uri) in [
        (
            "/blog/files/a%2Fb?x=1",
            "/blog",
            "/files/a/b",
            "/files/a%2Fb?x=1",
        ),
        (
            "/blog/files/a%252Fb",
            "/blog",
            "/files/a%2Fb",
            "/files/a%252Fb",
        ),
        ("/files/a%2fb", "", "/files/a/b", "/files/a%2fb"),
        ("/cgi/files/a%2Fb", "/cgi", "/files/a/b", "/files/a%2Fb"),
        (
            "/blog/mysite.fcgi/files/a%2Fb",
            "/blog/mysite.fcgi",
            "/files/a/b",
            "/files/a%2Fb",
        ),
    ] {
        let j = a.get(target).echo();
        assert_eq!(
            (
                j["script_name"].as_str(),
                j["path_info"].as_str(),
                j["uri"].as_str()
            ),
            (Some(script), Some(path), Some(uri)),
            "{target}: {j}"
        );
    }
}

/// Rules that send a request to the script with no path after it, which users write
/// instead of the shipped one: `FallbackResource` (mod_dir) and a rewrite without
/// `/$1`. Apache then sends no `PATH_INFO`; the app must still see its folder as the
/// mount and the rest as the path, and links it builds must route back to it.
/// A folder `public_html/<dir>` with the echo example as `mysite.fcgi` under
/// mod_fcgid and an .htaccess of these rewrite `rules`.
fn fcgid_folder(a: &Apache, dir: &str, rules: &str) {
    let d = a.dir.path().join("public_html").join(dir);
    fs::create_dir_all(&d).unwrap();
    fs::set_permissions(&d, fs::Permissions::from_mode(0o755)).unwrap();
    let exe = d.join("mysite.fcgi");
    fs::copy(example("echo"), &exe).unwrap();
    fs::set_permissions(&exe, fs::Permissions::from_mode(0o755)).unwrap();
    let ht = d.join(".htaccess");
    fs::write(
        &ht,
        format!("Options +ExecCGI\nAddHandler fcgid-script .fcgi\n{rules}"),
    )
    .unwrap();
    fs::set_permissions(&ht, fs::Permissions::from_mode(0o644)).unwrap();
}

#[test]
fn fcgid_fallback_resource_and_a_rewrite_without_the_path() {
    let a = Apache::start();
    for (dir, rules) in [
        // RewriteEngine Off: the site root's .htaccess rewrites would apply here too.
        (
            "fb",
            "RewriteEngine Off\nFallbackResource /fb/mysite.fcgi\n",
        ),
        (
            "bare",
            "RewriteEngine On\nRewriteCond %{REQUEST_FILENAME} !-f\nRewriteRule ^ mysite.fcgi [L]\n",
        ),
    ] {
        fcgid_folder(&a, dir, rules);

        let j = a.get(&format!("/{dir}/posts/1?x=1")).echo();
        assert_eq!(j["mode"], "fastcgi", "{dir}: {j}");
        assert!(
            matches!(j["vars"]["PATH_INFO"].as_str(), None | Some("")),
            "{dir}: {j}"
        );
        assert_eq!(j["script_name"], format!("/{dir}"), "{dir}: {j}");
        assert_eq!(j["path_info"], "/posts/1", "{dir}: {j}");
        assert_eq!(j["uri"], "/posts/1?x=1", "{dir}: {j}");
        assert_eq!(j["mount_source"], "ScriptFolder", "{dir}: {j}");

        let j = a.get(&format!("/{dir}/")).echo();
        assert_eq!(j["script_name"], format!("/{dir}"), "{dir}: {j}");
        assert_eq!(j["path_info"], "/", "{dir}: {j}");

        // The script's own URL is still a script mount with an empty path.
        let j = a.get(&format!("/{dir}/mysite.fcgi")).echo();
        assert_eq!(
            j["script_name"],
            format!("/{dir}/mysite.fcgi"),
            "{dir}: {j}"
        );
        assert_eq!(j["path_info"], "", "{dir}: {j}");
    }
}

/// mod_fcgid writes the whole request before it reads any of the response. An app
/// that answers without reading the body (a rejected upload, a page that ignores a
/// form) with a response larger than the socket's buffer must not wait for it: that
/// was FcgidIOTimeout (30 s here) and a 500.
#[test]
fn fcgid_unread_body_and_a_large_response() {
    let a = Apache::start();
    let body = vec![b'u'; 4 * 1024 * 1024];
    let t0 = Instant::now();
    let r = a.request(
        "POST",
        "/blog/stream?chunks=64&size=65536",
        &[("Content-Type", "application/octet-stream")],
        Body::Fixed(&body),
    );
    assert_eq!(r.status, 200, "{r:?}\n{}", a.error_log());
    assert_eq!(r.body.len(), 64 * 65536);
    assert!(t0.elapsed() < Duration::from_secs(10), "{:?}", t0.elapsed());
    // The process served it and serves on.
    assert_eq!(a.get("/blog/x").echo()["path_info"], "/x");
}

#[test]
fn fcgid_request_bodies() {
    let a = Apache::start();
    let cases: Vec<(&str, Vec<u8>, bool)> = vec![
        ("small", b"hello world".to_vec(), false),
        ("100k", noise(100 * 1024, 1), false),
        ("5m", noise(5 * 1024 * 1024, 2), false),
        ("100k-chunked", noise(100 * 1024, 3), true),
    ];
    for (name, data, chunked) in &cases {
        let target = format!("/blog/upload/{name}");
        let body = if *chunked {
            Body::Chunked(data)
        } else {
            Body::Fixed(data)
        };
        let j = a
            .request(
                "POST",
                &target,
                &[("Content-Type", "application/octet-stream")],
                body,
            )
            .echo();
        assert_eq!(j["method"], "POST", "{name}: {j}");
        assert_eq!(j["path_info"], format!("/upload/{name}"), "{name}: {j}");
        assert_eq!(j["body_len"], data.len() as u64, "{name}: {j}");
        assert_eq!(j["body_sha256"], sha256_hex(data), "{name}: {j}");
        assert_eq!(
            j["headers"]["content-type"], "application/octet-stream",
            "{name}: {j}"
        );
    }
    // At the site root too.
    let data = noise(100 * 1024, 4);
    let j = a.request("POST", "/upload", &[], Body::Fixed(&data)).echo();
    assert_eq!(j["script_name"], "", "{j}");
    assert_eq!(j["body_len"], data.len() as u64, "{j}");
    assert_eq!(j["body_sha256"], sha256_hex(&data), "{j}");
}

/// With FCGI_ALLOWED_HOSTS (in mysite.fcgi.env), a client's own Host never makes
/// the host of an absolute URL, although Apache (`UseCanonicalName Off`, its default)
/// copies that Host into SERVER_NAME as well: the first allowed host is used instead.
#[test]
fn fcgid_a_host_not_allowed_never_reaches_absolute_urls() {
    let a = Apache::start();
    let env = a.dir.path().join("public_html/blog/mysite.fcgi.env");
    fs::write(&env, "FCGI_ALLOWED_HOSTS=good.example\n").unwrap();
    fs::set_permissions(&env, fs::Permissions::from_mode(0o644)).unwrap();
    let location = |host: &str| {
        let mut s = TcpStream::connect(("127.0.0.1", a.port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        write!(
            s,
            "GET /blog/redirect HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut text = String::new();
        std::io::Read::read_to_string(&mut s, &mut text).unwrap();
        text.lines()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.eq_ignore_ascii_case("location")
                    .then(|| v.trim().to_owned())
            })
            .unwrap_or_else(|| panic!("no Location for Host {host}: {text}"))
    };
    assert_eq!(location("good.example"), "http://good.example/blog/landed");
    assert_eq!(location("evil.example"), "http://good.example/blog/landed");
    assert_eq!(
        location("evil.example:8080"),
        "http://good.example/blog/landed"
    );
}

#[test]
fn fcgid_redirect_cookies_and_stream() {
    let a = Apache::start();
    // The absolute URL of an app path keeps the pre-rewrite prefix and the Host sent.
    let r = a.get("/blog/redirect");
    assert_eq!(r.status, 302, "{r:?}");
    let want = format!("{}/blog/landed", a.origin());
    assert_eq!(r.all("location"), vec![want.as_str()], "{r:?}");

    let r = a.get("/blog/cookies");
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(
        r.all("set-cookie"),
        vec!["first=1; Path=/", "second=2; Path=/"],
        "{r:?}"
    );

    let r = a.get("/blog/stream?chunks=50&size=1000");
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.header("content-type"), Some("text/plain"), "{r:?}");
    assert_eq!(r.body.len(), 50_000);
    let want: Vec<u8> = (0..50u8)
        .flat_map(|i| std::iter::repeat_n(b'a' + i % 26, 1000))
        .collect();
    assert!(r.body == want, "stream content differs");

    // A body that fails midway: the app closes the connection without END_REQUEST,
    // and mod_fcgid does not pass the response on as complete (here nothing had
    // reached the client yet, so Apache answers 500; later it would cut the reply).
    let cut = try_http_request(
        a.port,
        "GET",
        "/blog/stream?chunks=5&size=10&fail_after=2",
        &[],
        Body::None,
        Duration::from_secs(10),
    );
    assert!(
        cut.as_ref().map_or(true, |r| r.status == 500),
        "{:?}",
        cut.map(|r| (r.status, r.text()))
    );
    assert!(
        a.error_log_has("FastCGI server closed connection", Duration::from_secs(5)),
        "{}",
        a.error_log()
    );
}

#[test]
fn fcgid_panic_is_500_and_process_lives() {
    let a = Apache::start();
    let first = a.get("/blog/").echo();
    let pid = pid_of(&first);
    assert_eq!(first["served"], 1, "{first}");

    let r = a.get("/blog/panic");
    assert_eq!(r.status, 500, "{r:?}");
    assert!(
        !r.text().contains("on purpose"),
        "panic details leaked to the client: {}",
        r.text()
    );
    assert!(
        a.error_log_has("the /panic route panics on purpose", Duration::from_secs(3)),
        "the panic is not in the error log:\n{}",
        a.error_log()
    );

    let j = a.get("/blog/after").echo();
    assert_eq!(
        pid_of(&j),
        pid,
        "a new process served the request after the panic: {j}"
    );
    assert_eq!(j["served"], 3, "{j}");
}

/// A body that ends short of its `Content-Length` under mod_fcgid (shorter than the
/// app declared, or failing midway) before anything reached the client: Apache
/// answers 500, also with mod_deflate compressing the reply (Debian's default for
/// text), never a 200 that looks whole. The app ends it with a close; an END_REQUEST
/// there (tried) had Apache send what came, which mod_deflate, dropping the app's
/// length, then ended as a complete, clean 200.
#[test]
fn fcgid_a_body_short_of_its_length_is_never_a_whole_200() {
    let a = Apache::start_with_config(
        "LoadModule filter_module /usr/lib/apache2/modules/mod_filter.so\n\
         LoadModule deflate_module /usr/lib/apache2/modules/mod_deflate.so\n\
         AddOutputFilterByType DEFLATE text/plain\n",
    );
    for target in [
        "/blog/stream?chunks=2&size=10&length=1000",
        "/blog/stream?chunks=5&size=10&fail_after=2&length=30",
    ] {
        for gzip in [false, true] {
            let headers: &[(&str, &str)] = if gzip {
                &[("Accept-Encoding", "gzip")]
            } else {
                &[]
            };
            let r = try_http_request(
                a.port,
                "GET",
                target,
                headers,
                Body::None,
                Duration::from_secs(20),
            );
            assert!(
                r.as_ref().is_ok_and(|r| r.status == 500),
                "{target} gzip {gzip}: {:?}",
                r.map(|r| (r.status, r.headers))
            );
        }
    }
}

#[test]
fn httpoxy_proxy_header_never_reaches_the_app() {
    let a = Apache::start();
    for target in ["/blog/x", "/x", "/cgi/x"] {
        let r = a.request(
            "GET",
            target,
            &[("Proxy", "http://evil:3128"), ("X-Custom", "passed")],
            Body::None,
        );
        let j = r.echo();
        assert_eq!(j["env_http_proxy"], Value::Null, "{target}: {j}");
        let headers = j["headers"].as_object().expect("headers");
        assert!(!headers.contains_key("proxy"), "{target}: {j}");
        // Other headers do get through, so the check above means something.
        assert_eq!(
            headers.get("x-custom"),
            Some(&Value::from("passed")),
            "{target}: {j}"
        );
    }
}

/// mod_fcgid sends `CONTENT_LENGTH=0` with every request: an app behind it sees no
/// `content-length` on a GET, as behind nginx (and as the client sent it), while an
/// empty POST keeps its 0. The variable itself is as the server sent it.
#[test]
fn an_empty_get_has_no_content_length_header() {
    let a = Apache::start();
    for target in ["/blog/x", "/x", "/cgi/x"] {
        let j = a.request("GET", target, &[], Body::None).echo();
        assert_eq!(j["method"], "GET", "{target}: {j}");
        assert!(
            j["headers"].get("content-length").is_none(),
            "{target}: {j}"
        );
        let j = a.request("POST", target, &[], Body::Fixed(b"")).echo();
        assert_eq!(j["headers"]["content-length"], "0", "{target}: {j}");
    }
}

/// Starts GET `target` in a thread; returns once the app process `pid` has had the
/// request for at least ~300 ms (it holds a socket it did not have before: the
/// connection mod_fcgid opened for it).
fn request_in_flight(a: &Apache, pid: u32, target: &str) -> std::thread::JoinHandle<Response> {
    let before = socket_inodes(pid);
    let port = a.port;
    let target = target.to_owned();
    let t = std::thread::spawn(move || http_request(port, "GET", &target, &[], Body::None));
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        wait_until(Duration::from_secs(5), || {
            socket_inodes(pid).difference(&before).next().is_some()
        }),
        "the request did not reach the app process {pid}"
    );
    t
}

#[test]
fn fcgid_sigterm_finishes_the_request_then_exits() {
    let a = Apache::start();
    let pid = pid_of(&a.get("/blog/").echo());
    let t = request_in_flight(&a, pid, "/blog/sleep?ms=1500");
    signal(pid as i32, libc::SIGTERM);
    let r = t.join().expect("request thread");
    let j = r.echo();
    assert_eq!(pid_of(&j), pid, "{j}");
    assert_eq!(j["path_info"], "/sleep", "{j}");

    assert!(
        wait_until(Duration::from_secs(5), || matches!(
            proc_state(pid),
            None | Some('Z')
        )),
        "app {pid} still running after SIGTERM and its last request: {:?}",
        proc_state(pid)
    );
    assert!(
        wait_until(Duration::from_secs(5), || proc_state(pid).is_none()),
        "mod_fcgid did not reap app {pid}"
    );
    let j = a.get("/blog/again").echo();
    assert_ne!(pid_of(&j), pid, "{j}");
    assert_eq!(j["served"], 1, "{j}");
}

#[test]
fn apache_graceful_stop_finishes_the_request() {
    let mut a = Apache::start();
    let pid = pid_of(&a.get("/blog/").echo());
    let t = request_in_flight(&a, pid, "/blog/sleep?ms=1500");
    a.graceful_stop();
    let r = t.join().expect("request thread");
    let j = r.echo();
    assert_eq!(pid_of(&j), pid, "{j}");
    // Apache exits by itself, and takes mod_fcgid's processes with it.
    let (killed, left) = a.stop(false);
    assert!(
        !killed,
        "Apache did not exit after a graceful stop:\n{}",
        a.logs()
    );
    assert!(
        left.is_empty(),
        "left over after a graceful stop: {left:?}\n{}",
        a.logs()
    );
    assert_eq!(proc_state(pid), None, "app {pid} outlived Apache");
}

#[test]
fn cgi_fallback() {
    let a = Apache::start();
    let j = a.get("/cgi/posts/1?x=1").echo();
    assert_eq!(j["mode"], "cgi", "{j}");
    assert_eq!(j["script_name"], "/cgi", "{j}");
    assert_eq!(j["path_info"], "/posts/1", "{j}");
    assert_eq!(j["uri"], "/posts/1?x=1", "{j}");
    assert_eq!(j["query"], "x=1", "{j}");
    assert_eq!(j["original_uri"], "/cgi/posts/1?x=1", "{j}");
    assert_eq!(j["served"], 1, "{j}");
    let pid1 = pid_of(&j);

    let j = a.get("/cgi/").echo();
    assert_eq!(j["script_name"], "/cgi", "{j}");
    assert_eq!(j["path_info"], "/", "{j}");
    assert_eq!(j["served"], 1, "{j}");
    assert_ne!(pid_of(&j), pid1, "CGI: one process per request");

    let data = noise(100 * 1024, 5);
    let j = a
        .request("POST", "/cgi/upload", &[], Body::Fixed(&data))
        .echo();
    assert_eq!(j["method"], "POST", "{j}");
    assert_eq!(j["body_len"], data.len() as u64, "{j}");
    assert_eq!(j["body_sha256"], sha256_hex(&data), "{j}");
    let j = a
        .request("POST", "/cgi/upload", &[], Body::Chunked(b"hello world"))
        .echo();
    assert_eq!(j["body_len"], 11, "{j}");
    assert_eq!(j["body_sha256"], sha256_hex(b"hello world"), "{j}");

    let r = a.get("/cgi/cookies");
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(
        r.all("set-cookie"),
        vec!["first=1; Path=/", "second=2; Path=/"],
        "{r:?}"
    );

    let r = a.get("/cgi/redirect");
    assert_eq!(r.status, 302, "{r:?}");
    assert_eq!(
        r.header("location"),
        Some(format!("{}/cgi/landed", a.origin()).as_str())
    );

    let r = a.get("/cgi/log");
    assert_eq!(r.status, 200, "{r:?}");
    assert!(
        a.error_log_has("echo: /log was requested", Duration::from_secs(3)),
        "the CGI app's log line is not in the error log:\n{}",
        a.error_log()
    );
}

/// Under mod_cgi(d), an app that answers a POST without reading its body (a 404, an
/// early rejection, axum's own 405/413) still gets its answer to the client: Apache
/// writes the whole body to the program before it reads the response, and a program
/// that exited without reading it made that write fail (EPIPE), and Apache drop the
/// response (an empty reply). The program drains the body before it exits, and while
/// a response larger than the pipe waits to go out.
#[test]
fn cgi_unread_body_gets_the_apps_answer() {
    let a = Apache::start();
    let body = noise(2 * 1024 * 1024, 6);
    let t = Duration::from_secs(20);
    for (target, fixed) in [
        ("/cgi/status/404", true),
        ("/cgi/status/404", false),
        ("/cgi/stream?chunks=1&size=10", true),
    ] {
        let b = if fixed {
            Body::Fixed(&body)
        } else {
            Body::Chunked(&body)
        };
        let ct = [("Content-Type", "application/octet-stream")];
        let r = try_http_request(a.port, "POST", target, &ct, b, t)
            .unwrap_or_else(|e| panic!("POST {target} (fixed={fixed}): {e}\n{}", a.error_log()));
        let want = if target.contains("404") { 404 } else { 200 };
        assert_eq!(r.status, want, "{target}: {r:?}\n{}", a.error_log());
        if want == 200 {
            assert_eq!(r.body, b"aaaaaaaaaa", "{r:?}");
        }
    }
    // A response larger than the pipe, the body unread: out in seconds, not after
    // Apache's Timeout (30 s here), and whole.
    let t0 = Instant::now();
    let r = try_http_request(
        a.port,
        "POST",
        "/cgi/stream?chunks=64&size=65536",
        &[],
        Body::Fixed(&body),
        t,
    )
    .unwrap_or_else(|e| panic!("{e}\n{}", a.error_log()));
    assert_eq!(r.status, 200, "{}", a.error_log());
    assert_eq!(r.body.len(), 64 * 65536);
    assert!(t0.elapsed() < Duration::from_secs(10), "{:?}", t0.elapsed());
    assert!(!a.error_log().contains("Broken pipe"), "{}", a.error_log());
}

/// An app's hop-by-hop headers (`Transfer-Encoding`, `Keep-Alive`, a `Connection`
/// other than `close`) are left out of the head the web server gets: mod_fcgid passed
/// the app's `Transfer-Encoding: chunked` to the client without chunking the body, a
/// malformed response (curl: error 56).
#[test]
fn hop_by_hop_headers_from_the_app_never_reach_the_client() {
    let a = Apache::start();
    for target in [
        "/blog/hop-by-hop",
        "/blog/hop-by-hop?keep=1",
        "/hop-by-hop",
        "/cgi/hop-by-hop",
    ] {
        // Read raw: the app's `x-latin1` header is not UTF-8, which the tests' client
        // refuses.
        let mut s = TcpStream::connect(("127.0.0.1", a.port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        write!(
            s,
            "GET {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut all = Vec::new();
        s.read_to_end(&mut all)
            .unwrap_or_else(|e| panic!("{target}: {e}"));
        let end = all
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .unwrap_or_else(|| panic!("{target}: {:?}", String::from_utf8_lossy(&all)));
        let head = String::from_utf8_lossy(&all[..end]).to_ascii_lowercase();
        let rest = &all[end + 4..];
        assert!(head.starts_with("http/1.1 200 "), "{target}: {head}");
        assert!(!head.contains("timeout=5"), "{target}: {head}");
        assert!(
            head.matches("transfer-encoding").count() <= 1,
            "{target}: {head}"
        );
        // Framed as the head says: chunked (Apache's chunks), or by a Content-Length.
        let body = if head.contains("\r\ntransfer-encoding: chunked") {
            dechunk(rest).unwrap_or_else(|e| {
                panic!("{target}: {e}: {head}\n{:?}", String::from_utf8_lossy(rest))
            })
        } else {
            let len = head
                .split("\r\n")
                .find_map(|l| l.strip_prefix("content-length: "))
                .and_then(|v| v.trim().parse::<usize>().ok())
                .unwrap_or_else(|| panic!("{target}: no framing: {head}"));
            assert_eq!(rest.len(), len, "{target}: {head}");
            rest.to_vec()
        };
        let j: Value = serde_json::from_slice(&body).unwrap_or_else(|e| {
            panic!("{target}: {e}: {head}\n{:?}", String::from_utf8_lossy(rest))
        });
        assert_eq!(j["path_info"], "/hop-by-hop", "{target}: {j}");
    }
}

#[test]
fn fcgid_app_log_reaches_error_log() {
    let a = Apache::start();
    let r = a.get("/blog/log");
    assert_eq!(r.status, 200, "{r:?}");
    assert!(
        a.error_log_has("echo: /log was requested", Duration::from_secs(3)),
        "the app's log line is not in the error log:\n{}",
        a.error_log()
    );
}

#[test]
fn settings_file_beside_the_binary_is_not_served() {
    let a = Apache::start();
    let env = a.dir.join("public_html/blog/mysite.fcgi.env");
    fs::write(&env, "# settings\nFCGI_LOG=info\n").unwrap();
    fs::set_permissions(&env, fs::Permissions::from_mode(0o644)).unwrap();
    let r = a.get("/blog/mysite.fcgi.env");
    assert_eq!(r.status, 403, "{}", r.text());
    assert!(!r.text().contains("FCGI_LOG"));
    // The app beside it still serves (and read the file without complaint).
    assert_eq!(a.get("/blog/posts/1").echo()["path_info"], "/posts/1");
}

/// `AddHandler ... .fcgi` matches every name with `.fcgi` in it: a copy beside the
/// binary (`mysite.fcgi.old` kept, `mysite.fcgi.new` being uploaded) ran as the app,
/// and `/blog/mysite.fcgi.env/x` got past the `\.env$` rule and had mod_fcgid try to
/// run the settings file (three spawns, 8 s, a 500). The templates forbid both, at the
/// root, in a subdirectory and under CGI, and the app still serves the rest.
#[test]
fn copies_and_settings_beside_the_binary_are_neither_run_nor_served() {
    let a = Apache::start();
    for (dir, prefix) in [
        ("public_html", ""),
        ("public_html/blog", "/blog"),
        ("public_html/cgi", "/cgi"),
    ] {
        let d = a.dir.join(dir);
        fs::copy(d.join("mysite.fcgi"), d.join("mysite.fcgi.old")).unwrap();
        fs::set_permissions(d.join("mysite.fcgi.old"), fs::Permissions::from_mode(0o755)).unwrap();
        fs::write(d.join("mysite.fcgi.env"), "# settings\nFCGI_LOG=info\n").unwrap();
        fs::set_permissions(d.join("mysite.fcgi.env"), fs::Permissions::from_mode(0o644)).unwrap();
        for path in [
            "/mysite.fcgi.old/x",
            "/mysite.fcgi.old",
            "/mysite.fcgi.env/x",
            "/mysite.fcgi.env/",
            "/mysite.fcgi.env",
        ] {
            let target = format!("{prefix}{path}");
            let t0 = Instant::now();
            let r = try_http_request(
                a.port,
                "GET",
                &target,
                &[],
                Body::None,
                Duration::from_secs(20),
            )
            .unwrap_or_else(|e| panic!("{target}: {e}"));
            assert!(
                r.status == 403 || r.status == 404,
                "{target}: {} in {:?}: {}\n{}",
                r.status,
                t0.elapsed(),
                r.text(),
                a.error_log()
            );
            assert!(!r.text().contains("FCGI_LOG"), "{target}: {}", r.text());
            assert!(!r.text().contains("path_info"), "{target}: {}", r.text());
        }
        // The app still serves its own URLs, and one that merely ends in .env.
        for (target, path_info) in [
            (format!("{prefix}/"), "/"),
            (format!("{prefix}/posts/1"), "/posts/1"),
            (format!("{prefix}/a.env/x"), "/a.env/x"),
            (format!("{prefix}/a.env"), "/a.env"),
        ] {
            let r = a.get(&target);
            assert_eq!(r.status, 200, "{target}: {}", r.text());
            let j = r.echo();
            assert_eq!(j["path_info"], path_info, "{target}: {j}");
        }
    }
    assert!(
        !a.error_log().contains("mysite.fcgi.env("),
        "mod_fcgid tried to run the settings file:\n{}",
        a.error_log()
    );
}

/// Under suEXEC, as shared hosts run their customers' programs (README, "When the host
/// answers 500"): mod_fcgid and mod_cgid start the app as the site's user; suEXEC drops
/// `FcgidInitialEnv` while the settings file beside the binary is read; and a new
/// upload is taken up, though suEXEC starts the program by its bare name (`argv[0]` is
/// `mysite.fcgi`, so the binary watch goes by the program's own path).
#[test]
fn suexec_runs_the_site_as_its_user() {
    if !is_root() {
        eprintln!("skipped: suEXEC needs root (the site must belong to a user of its own)");
        return;
    }
    let user = SiteUser::get();
    let a = Apache::start_suexec(user);
    let suexec_log = || fs::read_to_string("/var/log/apache2/suexec.log").unwrap_or_default();
    let env = a.dir.join("public_html/mysite.fcgi.env");
    fs::write(&env, "FORCE_SCRIPT_NAME=/site\n").unwrap();
    fs::set_permissions(&env, fs::Permissions::from_mode(0o644)).unwrap();
    user.chown(&env);

    let r = a.get("/posts/1");
    assert_eq!(
        r.status,
        200,
        "{}\n{}\nsuexec.log:\n{}",
        r.text(),
        a.logs(),
        suexec_log()
    );
    let j = r.echo();
    assert_eq!(j["mode"], "fastcgi", "{j}");
    assert_eq!(
        j["script_name"], "/site",
        "the settings file was not read: {j}"
    );
    assert_eq!(j["path_info"], "/posts/1", "{j}");
    assert_eq!(uid_of(pid_of(&j)), user.uid, "{j}");

    let j = a.get("/blog/posts/1").echo();
    assert_eq!(
        j["script_name"], "/blog",
        "FcgidInitialEnv reached the app: {j}"
    );
    assert_eq!(j["path_info"], "/posts/1", "{j}");
    let old = pid_of(&j);
    assert_eq!(uid_of(old), user.uid, "{j}");

    let j = a.get("/cgi/posts/1?x=1").echo();
    assert_eq!(j["mode"], "cgi", "{j}");
    assert_eq!(j["script_name"], "/cgi", "{j}");
    assert_eq!(j["uri"], "/posts/1?x=1", "{j}");

    // A new upload, by the site's user: mod_fcgid starts the new file (through suEXEC)
    // for the next request, and the old process, idle from then on, notices the upload
    // and exits by itself (its watch goes by its own path, argv[0] being a bare name).
    let exe = a.dir.join("public_html/blog/mysite.fcgi");
    let tmp = a.dir.join("public_html/blog/mysite.fcgi.new");
    fs::copy(example("echo"), &tmp).unwrap();
    fs::set_permissions(&tmp, fs::Permissions::from_mode(0o755)).unwrap();
    user.chown(&tmp);
    fs::rename(&tmp, &exe).unwrap();
    let mut statuses = Vec::new();
    let mut new = None;
    let taken_up = wait_until(Duration::from_secs(15), || {
        let r = a.get("/blog/x");
        statuses.push(r.status);
        if r.status == 200 {
            let pid = pid_of(&r.echo());
            if pid != old {
                new = Some(pid);
            }
        }
        std::thread::sleep(Duration::from_millis(50));
        new.is_some()
    });
    assert!(
        taken_up,
        "the new upload never answered: {statuses:?}\n{}",
        a.logs()
    );
    assert!(
        statuses.iter().all(|&s| s == 200),
        "{statuses:?}\n{}",
        a.logs()
    );
    assert_eq!(uid_of(new.unwrap()), user.uid);
    let gone = || !Path::new(&format!("/proc/{old}")).exists();
    assert!(
        wait_until(Duration::from_secs(10), || a
            .error_log()
            .contains("was replaced")
            && gone()),
        "the old process did not exit\n{}",
        a.logs()
    );
}

/// The axum example (feature `axum`) under mod_fcgid in a subdirectory with the
/// htaccess/ file, and through mod_cgi.
#[cfg(feature = "axum")]
#[test]
fn axum_under_fcgid_and_cgi() {
    let a = Apache::start_app("axum", None);
    let o = a.origin();
    for (dir, mode) in [("blog", "fastcgi"), ("cgi", "cgi")] {
        let r = a.get(&format!("/{dir}/posts/12"));
        assert_eq!(
            (r.status, r.text()),
            (200, "<h1>Post 12</h1>".to_owned()),
            "{dir}"
        );
        let r = a.get(&format!("/{dir}/"));
        assert!(
            r.text().contains(&format!(r#"<a href="/{dir}/posts/1">"#)),
            "{dir}: {}",
            r.text()
        );
        let r = a.get(&format!("/{dir}/go"));
        assert_eq!(r.status, 303, "{dir}");
        assert_eq!(
            r.header("location"),
            Some(format!("{o}/{dir}/posts/1").as_str())
        );
        let r = a.request(
            "POST",
            &format!("/{dir}/greet"),
            &[("Content-Type", "application/x-www-form-urlencoded")],
            Body::Fixed(b"name=Cy"),
        );
        assert_eq!(r.text(), "<p>Hello, Cy!</p>", "{dir}");
        let j: Value = serde_json::from_str(&a.get(&format!("/{dir}/api/info")).text()).unwrap();
        assert_eq!(j["script_name"], format!("/{dir}"));
        assert_eq!(j["path"], "/api/info");
        assert_eq!(j["mode"], mode);
        // axum's ConnectInfo and OriginalUri (feature `axum`), from what Apache sent.
        let j: Value =
            serde_json::from_str(&a.get(&format!("/{dir}/api/client?x=1")).text()).unwrap();
        assert_client_is_loopback(&j);
        assert_eq!(j["original_uri"], format!("/{dir}/api/client?x=1"));
        assert_eq!(j["uri"], "/api/client?x=1");
        let r = a.get(&format!("/{dir}/stream?n=3&delay_ms=50"));
        assert_eq!(r.text().matches("line ").count(), 3, "{dir}: {}", r.text());
        let body = noise(200 * 1024, 3);
        let r = a.request("POST", &format!("/{dir}/upload"), &[], Body::Fixed(&body));
        let j: Value = serde_json::from_str(&r.text()).unwrap();
        assert_eq!(j["sha256"], sha256_hex(&body), "{dir}");
    }
}

/// The `Authorization` header (Basic logins, Bearer tokens), which Apache keeps from
/// CGI and FastCGI apps unless told otherwise, reaches the app through each shipped
/// .htaccess (mod_fcgid at the root and in /blog/, mod_cgi), and a request without
/// one has none.
#[test]
fn the_authorization_header_reaches_the_app() {
    let a = Apache::start();
    // Two rules seen in the wild: the `E=` on the rule that rewrites to the app (it
    // arrives as REDIRECT_HTTP_AUTHORIZATION after Apache's internal redirect), and
    // one without the `RewriteCond` (it arrives empty when the client sent none).
    for (dir, rules) in [
        (
            "onrule",
            "RewriteEngine On\nRewriteCond %{REQUEST_FILENAME} !-f\n\
             RewriteRule ^(.*)$ mysite.fcgi/$1 [E=HTTP_AUTHORIZATION:%{HTTP:Authorization},QSA,L]\n",
        ),
        (
            "nocond",
            "RewriteEngine On\nRewriteRule ^ - [E=HTTP_AUTHORIZATION:%{HTTP:Authorization}]\n\
             RewriteCond %{REQUEST_FILENAME} !-f\nRewriteRule ^(.*)$ mysite.fcgi/$1 [QSA,L]\n",
        ),
    ] {
        fcgid_folder(&a, dir, rules);
    }
    for dir in ["", "/blog", "/cgi", "/onrule", "/nocond"] {
        for auth in ["Bearer t0k.en", "Basic dXNlcjpwdw=="] {
            let r = a.request(
                "GET",
                &format!("{dir}/api/me"),
                &[("Authorization", auth)],
                Body::None,
            );
            let j = r.echo();
            assert_eq!(j["headers"]["authorization"], auth, "{dir}: {j}");
        }
        let j = a.get(&format!("{dir}/api/me")).echo();
        assert!(j["headers"].get("authorization").is_none(), "{dir}: {j}");
    }
}

/// The axum example's `/api/client` answer names a loopback client with a real port
/// (the web server's `REMOTE_PORT`).
#[cfg(feature = "axum")]
pub fn assert_client_is_loopback(j: &Value) {
    let client: std::net::SocketAddr = j["client"]
        .as_str()
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("{j}"));
    assert!(client.ip().is_loopback() && client.port() != 0, "{j}");
}

/// Not a test: `scripts/example-site` runs this to serve the echo example through the
/// same Apache set-up the tests use, until Enter (or the script's Ctrl-C trap) stops it.
#[test]
#[ignore = "run by scripts/example-site"]
fn example_site() {
    let port = std::env::var("EXAMPLE_SITE_PORT")
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or(8080);
    let a = Apache::start_on(Some(port));
    if let Some(pidfile) = std::env::var_os("EXAMPLE_SITE_PIDFILE") {
        fs::write(pidfile, a.pid().to_string()).unwrap();
    }
    let o = a.origin();
    println!(
        "\nThe echo example, served by Apache {} with the htaccess/ files:\n  \
         {o}/            site root, mod_fcgid (htaccess/fcgid-root.htaccess)\n  \
         {o}/blog/       subdirectory, mod_fcgid (htaccess/fcgid-subdir.htaccess)\n  \
         {o}/cgi/        plain CGI (htaccess/cgi-fallback.htaccess)\n\
         Try {o}/blog/posts/1?x=1, {o}/blog/redirect, {o}/blog/stream?chunks=5&size=10\n\
         Apache's logs: {}\nPress Enter (or Ctrl-C) to stop.",
        a.dir.path().display(),
        a.dir.join("logs").display()
    );
    let mut line = String::new();
    let _ = std::io::stdin().read_line(&mut line);
}

/// A site reached by a `~user` URL (mod_userdir, as many shared hosts give each account,
/// or as the temporary URL before a domain points at the host) or under an `Alias`:
/// the shipped `.htaccess` files, verbatim, mount the app at that URL. Apache 2.4.16
/// and later give mod_rewrite the prefix that mod_userdir and mod_alias mapped, so no
/// `RewriteBase` is needed; the folder under the `Alias` also has the README's
/// `RewriteBase` line set, as older Apaches need, which must work the same.
#[test]
fn fcgid_and_cgi_under_userdir_and_alias() {
    let allow = "AllowOverride FileInfo Indexes Limit Options=ExecCGI,Includes,IncludesNOEXEC,Indexes,MultiViews,SymLinksIfOwnerMatch\n  Require all granted";
    let a = Apache::start_with_config(&format!(
        "<IfModule !userdir_module>
  LoadModule userdir_module {MODULE_DIR}/mod_userdir.so
</IfModule>
<IfModule !alias_module>
  LoadModule alias_module {MODULE_DIR}/mod_alias.so
</IfModule>
UserDir {{ROOT}}/home/*/public_html
Alias /site {{ROOT}}/aliased
<Directory {{ROOT}}/home/alice/public_html>
  {allow}
</Directory>
<Directory {{ROOT}}/aliased>
  {allow}
</Directory>
"
    ));
    let shipped = |file: &str| {
        fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("htaccess")
                .join(file),
        )
        .unwrap()
    };
    let with_base = |file: &str, commented: &str, base: &str| {
        let text = shipped(file);
        assert!(text.contains(commented), "{file} has no `{commented}` line");
        text.replace(commented, &format!("RewriteBase {base}"))
    };
    let root = a.dir.path();
    for d in ["home", "home/alice"] {
        fs::create_dir_all(root.join(d)).unwrap();
        fs::set_permissions(root.join(d), fs::Permissions::from_mode(0o755)).unwrap();
    }
    for (dir, htaccess) in [
        ("home/alice/public_html", shipped("fcgid-root.htaccess")),
        (
            "home/alice/public_html/blog",
            shipped("fcgid-subdir.htaccess"),
        ),
        (
            "home/alice/public_html/cgi",
            shipped("cgi-fallback.htaccess"),
        ),
        (
            "aliased",
            with_base("fcgid-root.htaccess", "# RewriteBase /~user/", "/site/"),
        ),
        (
            "aliased/blog",
            with_base(
                "fcgid-subdir.htaccess",
                "# RewriteBase /~user/blog/",
                "/site/blog/",
            ),
        ),
    ] {
        let d = root.join(dir);
        fs::create_dir_all(&d).unwrap();
        fs::set_permissions(&d, fs::Permissions::from_mode(0o755)).unwrap();
        let exe = d.join("mysite.fcgi");
        fs::copy(example("echo"), &exe).unwrap();
        fs::set_permissions(&exe, fs::Permissions::from_mode(0o755)).unwrap();
        fs::write(d.join(".htaccess"), htaccess).unwrap();
        fs::set_permissions(d.join(".htaccess"), fs::Permissions::from_mode(0o644)).unwrap();
    }
    fs::write(root.join("home/alice/public_html/robots.txt"), "alice's\n").unwrap();
    fs::set_permissions(
        root.join("home/alice/public_html/robots.txt"),
        fs::Permissions::from_mode(0o644),
    )
    .unwrap();

    for (prefix, mode) in [
        ("/~alice", "fastcgi"),
        ("/~alice/blog", "fastcgi"),
        ("/~alice/cgi", "cgi"),
        ("/site", "fastcgi"),
        ("/site/blog", "fastcgi"),
    ] {
        let j = a.get(&format!("{prefix}/posts/1?x=1")).echo();
        assert_eq!(j["mode"], mode, "{prefix}: {j}");
        assert_eq!(j["script_name"], prefix, "{prefix}: {j}");
        assert_eq!(j["path_info"], "/posts/1", "{prefix}: {j}");
        assert_eq!(j["uri"], "/posts/1?x=1", "{prefix}: {j}");
        assert_eq!(
            j["original_uri"],
            format!("{prefix}/posts/1?x=1"),
            "{prefix}: {j}"
        );

        let j = a.get(&format!("{prefix}/")).echo();
        assert_eq!(j["script_name"], prefix, "{prefix}: {j}");
        assert_eq!(j["path_info"], "/", "{prefix}: {j}");

        let j = a.get(&format!("{prefix}/caf%C3%A9/a%20b")).echo();
        assert_eq!(j["script_name"], prefix, "{prefix}: {j}");
        assert_eq!(j["path_info"], "/café/a b", "{prefix}: {j}");
        assert_eq!(j["uri"], "/caf%C3%A9/a%20b", "{prefix}: {j}");

        // Links the app builds keep the prefix.
        let r = a.get(&format!("{prefix}/redirect"));
        assert_eq!(r.status, 302, "{prefix}: {r:?}");
        assert_eq!(
            r.header("location"),
            Some(format!("{}{prefix}/landed", a.origin()).as_str()),
            "{prefix}: {r:?}"
        );
    }

    // A client may encode the tilde (`%7E`, RFC 3986 calls them equivalent): the same
    // mount, spelled as a link can use it.
    for target in ["/%7Ealice/posts/1", "/%7ealice/blog/posts/1"] {
        let j = a.get(target).echo();
        let prefix = if target.contains("blog") {
            "/~alice/blog"
        } else {
            "/~alice"
        };
        assert_eq!(j["script_name"], prefix, "{target}: {j}");
        assert_eq!(j["path_info"], "/posts/1", "{target}: {j}");
        assert_eq!(j["uri"], "/posts/1", "{target}: {j}");
        assert_eq!(j["original_uri"], target, "{target}: {j}");
    }

    // A real file in the user's folder is Apache's; the folder without its slash is
    // redirected first, as at the site root.
    let r = a.get("/~alice/robots.txt");
    assert_eq!(
        (r.status, r.text()),
        (200, "alice's\n".to_string()),
        "{r:?}"
    );
    for prefix in ["/~alice/blog", "/site/blog"] {
        let r = a.get(prefix);
        assert_eq!(r.status, 301, "{r:?}");
        assert_eq!(
            r.header("location"),
            Some(format!("{}{prefix}/", a.origin()).as_str()),
            "{r:?}"
        );
    }
}

/// The FastCGI authorizer role under mod_fcgid (`FcgidAuthenticator` and
/// `FcgidAuthorizer` naming the app, as its documentation sets them up): the echo app
/// answers each phase 200 for `/status/200`, so Apache serves the file, and 403 or 401
/// by its route for the others, which mod_fcgid turns into a 401 (its own page: it
/// passes on no body of a failed check).
#[test]
fn fcgid_authenticator_and_authorizer() {
    let a = Apache::start_with_config(
        "<IfModule !authn_core_module>
  LoadModule authn_core_module /usr/lib/apache2/modules/mod_authn_core.so
</IfModule>
<IfModule !authz_user_module>
  LoadModule authz_user_module /usr/lib/apache2/modules/mod_authz_user.so
</IfModule>
<Directory \"{ROOT}/public_html/status\">
  AuthType Basic
  AuthName private
  FcgidAuthenticator {ROOT}/public_html/mysite.fcgi
  FcgidAuthorizer {ROOT}/public_html/mysite.fcgi
  Require valid-user
</Directory>
",
    );
    let dir = a.dir.path().join("public_html/status");
    fs::create_dir_all(&dir).unwrap();
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
    for name in ["200", "403", "401"] {
        fs::write(dir.join(name), "the file\n").unwrap();
    }
    // user `u`, password `p`
    let basic = [("Authorization", "Basic dTpw")];
    let r = a.request("GET", "/status/200", &basic, Body::None);
    assert_eq!(
        (r.status, r.text()),
        (200, "the file\n".to_string()),
        "{r:?}"
    );
    for target in ["/status/403", "/status/401?x=1"] {
        let r = a.request("GET", target, &basic, Body::None);
        assert_eq!(r.status, 401, "{target}: {r:?}");
        assert!(!r.text().contains("the file"), "{target}: {r:?}");
    }
    assert!(
        a.error_log_has(
            "Authorization of user u to access /status/200 succeeded",
            Duration::from_secs(3)
        ) && a.error_log_has("script returned status 403", Duration::from_secs(3)),
        "{}",
        a.error_log()
    );
}

/// Large response heads under mod_fcgid and mod_cgid: Apache reads each header line
/// into 8 KiB (8189 bytes and CRLF at most) and answers 500 ("Premature end of script
/// headers") for a longer one; any number of short lines pass. The fcgid process
/// serves on after the 500.
#[test]
fn fcgid_and_cgi_large_response_heads() {
    let a = Apache::start_app("big_heads", None);
    let first = a.get("/");
    assert_eq!(first.status, 200, "{first:?}");
    let pid = first.text().split(' ').next().unwrap().to_owned();
    for prefix in ["", "/cgi"] {
        // "x-big: " and 8182 bytes: the longest line Apache takes.
        for (query, status) in [
            ("name=set-cookie&size=7168", 200),
            ("size=8182", 200),
            ("size=8183", 500),
            ("name=set-cookie&size=71680", 500),
        ] {
            let r = a.get(&format!("{prefix}/head?{query}"));
            assert_eq!(r.status, status, "{prefix} {query}: {r:?}");
        }
        let r = a.get(&format!("{prefix}/head?name=x-many&size=100&count=2000"));
        assert_eq!(r.status, 200, "{prefix}");
        assert_eq!(r.header("x-many-1999").map(str::len), Some(100), "{prefix}");
    }
    assert!(
        a.error_log_has("Premature end of script headers", Duration::from_secs(5)),
        "{}",
        a.logs()
    );
    let r = a.get("/after");
    assert!(
        r.text().starts_with(&format!("{pid} ")),
        "{r:?} {}",
        r.text()
    );
}

// ---- HTTP/2 (h2c, prior knowledge) from the client ----

/// mod_http2 on, h2c with prior knowledge accepted (the event MPM is loaded already).
const H2C: &str = "<IfModule !http2_module>\n  LoadModule http2_module /usr/lib/apache2/modules/mod_http2.so\n</IfModule>\nProtocols h2c http/1.1\nH2Direct on\n";

fn assert_whole_h2_upload(port: u16, target: &str, data: &[u8], with_length: bool) {
    let (status, j) = curl_h2c(port, target, &[], Some((data, with_length)));
    let what = format!(
        "{target}: {} bytes, content-length: {with_length}",
        data.len()
    );
    assert_eq!(status, 200, "{what}: {j}");
    assert_whole_body(&j, data, &what);
    assert_eq!(j["vars"]["SERVER_PROTOCOL"], "HTTP/2.0", "{what}: {j}");
}

/// A client speaking h2c: mod_fcgid at the site root and in /blog/, and mod_cgid in
/// /cgi/, see the same mount as over HTTP/1.1 and SERVER_PROTOCOL=HTTP/2.0; uploads
/// with a content-length arrive whole, and under mod_cgid one without any too (Apache
/// passes HTTP_TRANSFER_ENCODING=chunked for it and closes stdin at its end).
#[test]
fn fcgid_and_cgi_over_h2c() {
    let a = Apache::start_with_config(H2C);
    for (prefix, mode) in [("", "fastcgi"), ("/blog", "fastcgi"), ("/cgi", "cgi")] {
        let (status, j) = curl_h2c(a.port, &format!("{prefix}/posts/1?x=1"), &[], None);
        assert_eq!(status, 200, "{j}");
        assert_eq!(
            (&j["mode"], &j["script_name"], &j["path_info"], &j["uri"]),
            (
                &serde_json::json!(mode),
                &serde_json::json!(prefix),
                &serde_json::json!("/posts/1"),
                &serde_json::json!("/posts/1?x=1")
            ),
            "{j}"
        );
        assert_eq!(j["vars"]["SERVER_PROTOCOL"], "HTTP/2.0", "{j}");
        for data in [noise(10, 31), noise(5 << 20, 32)] {
            assert_whole_h2_upload(a.port, &format!("{prefix}/upload"), &data, true);
            if mode == "cgi" {
                assert_whole_h2_upload(a.port, &format!("{prefix}/upload"), &data, false);
            }
        }
    }
    let (status, _) = curl_h2c(a.port, "/panic", &[], None);
    assert_eq!(status, 500);
}

/// HTTPS, as every shared host serves sites now: mod_ssl on a second port with a
/// self-signed certificate, HTTP/1.1 and HTTP/2 (ALPN, mod_http2), to mod_fcgid at the
/// site root and in /blog/ and to mod_cgid in /cgi/ ([`https_checks`]: Apache sends
/// `HTTPS=on` and `REQUEST_SCHEME=https`; the app says it is HTTPS and builds its
/// absolute URLs with `https://` and the TLS port; 5 MiB uploads arrive whole), while
/// the plain port beside it stays `http://`.
#[test]
fn fcgid_and_cgi_over_https_and_h2() {
    let certs = TempDir::new("apache-tls");
    fs::set_permissions(certs.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let (cert, key) = self_signed_cert(certs.path());
    let tls = free_port();
    let a = Apache::start_with_config(&format!(
        "<IfModule !ssl_module>
  LoadModule ssl_module {MODULE_DIR}/mod_ssl.so
</IfModule>
<IfModule !http2_module>
  LoadModule http2_module {MODULE_DIR}/mod_http2.so
</IfModule>
Listen 127.0.0.1:{tls}
<VirtualHost 127.0.0.1:{tls}>
  SSLEngine on
  SSLCertificateFile {}
  SSLCertificateKeyFile {}
  Protocols h2 http/1.1
</VirtualHost>
",
        cert.display(),
        key.display()
    ));
    for (prefix, mode) in [("", "fastcgi"), ("/blog", "fastcgi"), ("/cgi", "cgi")] {
        https_checks(tls, prefix);
        for http2 in [false, true] {
            let j = curl_tls(tls, &format!("{prefix}/"), http2, &[]).echo();
            assert_eq!(j["mode"], mode, "{prefix}: {j}");
        }
        // The plain port of the same server is not HTTPS.
        let j = a.get(&format!("{prefix}/posts/1")).echo();
        assert_eq!(j["https"], false, "{prefix}: {j}");
        let r = a.get(&format!("{prefix}/redirect"));
        assert_eq!(
            r.header("location"),
            Some(format!("{}{prefix}/landed", a.origin()).as_str()),
            "{prefix}: {r:?}"
        );
    }
    // A panic is a 500 over TLS too, and the process serves on.
    let r = curl_tls(tls, "/panic", true, &[]);
    assert_eq!(r.status, 500, "{r:?}");
    assert_eq!(curl_tls(tls, "/", true, &[]).status, 200);
}

/// A shared host's usual front: nginx ends TLS and passes every request on to Apache
/// over plain HTTP (`proxy_pass`, the client's `Host`, `X-Forwarded-For/-Proto/-Host`
/// set by nginx), and Apache runs the app with mod_fcgid. Apache then sends no
/// `HTTPS`, so the app trusts the headers only where it is told to
/// (`FCGI_TRUST_FORWARDED=1` in the settings file beside the binary, /blog/ here):
/// there it is on HTTPS, its client is the one nginx saw (the last `X-Forwarded-For`
/// entry, not one the client forged before it), and its redirects say `https://` with
/// the front's port. A location that strips a prefix (`/shop/` to `/`) and names it in
/// `X-Forwarded-Prefix` puts it before the mount. The app at the site root, not told
/// to trust them, stays on `http://`.
#[test]
fn fcgid_behind_an_nginx_tls_front() {
    let a = Apache::start();
    let settings = a.dir.path().join("public_html/blog/mysite.fcgi.env");
    fs::write(&settings, "FCGI_TRUST_FORWARDED=1\n").unwrap();
    fs::set_permissions(&settings, fs::Permissions::from_mode(0o644)).unwrap();
    let dir = TempDir::new("nginx-front");
    let (cert, key) = self_signed_cert(dir.path());
    let tls = free_port();
    let back = a.port;
    let web = crate::servers::nginx(&dir, &|port| {
        let pass = |path: &str, to: &str, prefix: &str| {
            format!(
                "    location {path} {{
        proxy_pass http://127.0.0.1:{back}{to};
        proxy_set_header Host $host:$server_port;
        proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
        proxy_set_header X-Forwarded-Proto $scheme;
        proxy_set_header X-Forwarded-Host $host:$server_port;
        {prefix}
    }}
"
            )
        };
        format!(
            "server {{
    listen 127.0.0.1:{port};
    listen 127.0.0.1:{tls} ssl http2;
    ssl_certificate {};
    ssl_certificate_key {};
{}{}}}
",
            cert.display(),
            key.display(),
            pass("/", "", ""),
            pass("/shop/", "/", "proxy_set_header X-Forwarded-Prefix /shop;")
        )
    });
    let _ = web.port;
    for http2 in [false, true] {
        let r = curl_tls(
            tls,
            "/blog/posts/1?x=1",
            http2,
            &["X-Forwarded-For: 6.6.6.6", "X-Forwarded-Proto: http"],
        );
        assert_eq!(r.status, 200, "{r:?}");
        let j = r.echo();
        assert_eq!(
            (&j["mode"], &j["script_name"], &j["path_info"], &j["https"]),
            (
                &serde_json::json!("fastcgi"),
                &serde_json::json!("/blog"),
                &serde_json::json!("/posts/1"),
                &serde_json::json!(true)
            ),
            "{j}"
        );
        // Apache saw nginx, over plain HTTP; the app names the client nginx saw.
        assert_eq!(j["vars"]["HTTPS"], serde_json::Value::Null, "{j}");
        assert_eq!(j["remote_addr"], "127.0.0.1", "{j}");
        assert_eq!(j["headers"]["x-forwarded-for"], "6.6.6.6, 127.0.0.1", "{j}");
        // The front's prefix, stripped by its location, goes before the mount.
        for prefix in ["/blog", "/shop/blog"] {
            assert_https_redirect(tls, prefix, http2);
        }
        let j = curl_tls(tls, "/shop/blog/posts/1", http2, &[]).echo();
        assert_eq!(
            (&j["script_name"], &j["path_info"]),
            (
                &serde_json::json!("/shop/blog"),
                &serde_json::json!("/posts/1")
            ),
            "{j}"
        );

        // Not told to trust the front: the headers are only headers.
        let j = curl_tls(tls, "/posts/1", http2, &[]).echo();
        assert_eq!(j["https"], false, "{j}");
        let r = curl_tls(tls, "/redirect", http2, &[]);
        assert_eq!(
            r.header("location"),
            Some(format!("http://127.0.0.1:{tls}/landed").as_str()),
            "{r:?}"
        );
    }
}

/// mod_fcgid under h2c with an upload of no length: it reads the body whole and sends
/// the right CONTENT_LENGTH, but passes each empty bucket mod_http2 hands it on as an
/// empty FCGI_STDIN record (the end-of-stream marker) before and between the data.
/// The app must still get the whole body CONTENT_LENGTH declares.
#[test]
fn fcgid_h2c_upload_without_length() {
    let a = Apache::start_with_config(H2C);
    for prefix in ["", "/blog"] {
        for data in [noise(10, 33), noise(5 << 20, 34)] {
            assert_whole_h2_upload(a.port, &format!("{prefix}/upload"), &data, false);
        }
    }
}

/// GET `target` with curl, with `Accept-Encoding: gzip` and `--compressed` when `gzip`
/// (curl then checks and decodes a gzipped body): the response with its body decoded,
/// the time to its first byte, and to its end.
fn curl_timed(a: &Apache, target: &str, gzip: bool) -> (Response, Duration, Duration) {
    let dir = TempDir::new("curl");
    let (head, body) = (dir.join("head"), dir.join("body"));
    let mut cmd = Command::new("curl");
    cmd.args(["-sS", "--max-time", "60"])
        .args(["-w", "%{time_starttransfer} %{time_total}"])
        .arg("-D")
        .arg(&head)
        .arg("-o")
        .arg(&body);
    if gzip {
        cmd.args(["--compressed", "-H", "Accept-Encoding: gzip"]);
    }
    let out = cmd
        .arg(format!("{}{target}", a.origin()))
        .output()
        .expect("run curl");
    assert!(
        out.status.success(),
        "curl {target} (gzip {gzip}): {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        a.error_log()
    );
    let times: Vec<Duration> = String::from_utf8_lossy(&out.stdout)
        .split(' ')
        .map(|t| Duration::from_secs_f64(t.parse().expect("curl's times")))
        .collect();
    let mut r = parse_response(&fs::read(&head).unwrap(), true).unwrap();
    r.body = fs::read(&body).unwrap_or_default();
    (r, times[0], times[1])
}

/// The echo example's `/stream?chunks=N&size=S` body.
fn stream_body(chunks: u8, size: usize) -> Vec<u8> {
    (0..chunks)
        .flat_map(|i| std::iter::repeat_n(b'a' + i % 26, size))
        .collect()
}

/// The site under Debian's stock module set (`Apache::start_stock`) at the root, in
/// /blog/ (mod_fcgid) and in /cgi/ (mod_cgid), asked with and without
/// `Accept-Encoding: gzip`. What the stock set changes is Apache's own doing:
/// - mod_deflate (`AddOutputFilterByType DEFLATE text/plain ...`) gzips the app's text
///   (not its `application/json`), adds `Vary: Accept-Encoding` either way, and drops
///   the app's `Content-Length` (chunked, or a length of its own when it held the whole
///   reply). A HEAD, which the app answers without a body, comes back unencoded (with
///   the app's length under mod_fcgid). Under mod_cgid it holds a stream to the end (it reads the
///   program's output blocking, so no flush reaches the client); under mod_fcgid what
///   passes `FcgidOutputBufferSize` streams, compressed, as the app flushes it.
/// - mod_alias (`alias.conf`: `Alias /icons/ /usr/share/apache2/icons/`): `/icons/...`
///   at the site root is Apache's, never the app's (nor the site's own `icons/`).
/// - mod_negotiation: MultiViews is off (this config's `Options` are Apache's default,
///   and the shipped .htaccess adds only ExecCGI and SymLinksIfOwnerMatch), so
///   `/posts` beside a `posts.txt` is the app's; an `Options +MultiViews` hands it to
///   the file, and makes `/blog/mysite` (the binary's name) a 404.
/// - mod_reqtimeout (`body=10,minrate=500`): a 5 MiB upload at loopback speed is whole.
#[test]
fn the_site_under_debians_stock_modules() {
    let a = Apache::start_stock();
    let gz: &[(&str, &str)] = &[("Accept-Encoding", "gzip")];
    let sites = [("", "fastcgi"), ("/blog", "fastcgi"), ("/cgi", "cgi")];
    // The Content-Length that reaches the client: the app's under mod_fcgid; under
    // mod_cgid never the app's, only Apache's own count of a reply it had whole by the
    // time it sent the head (a small one, most times), else none (chunked).
    let length_ok = |mode: &str, r: &Response, app: usize| match mode {
        "fastcgi" => r.header("content-length") == Some(app.to_string().as_str()),
        _ => r
            .header("content-length")
            .is_none_or(|n| n == r.body.len().to_string()),
    };

    // The mount, with a posts.txt beside each app (for MultiViews to find).
    for (prefix, mode) in sites {
        let txt = a.dir.join(&format!("public_html{prefix}/posts.txt"));
        fs::write(&txt, "a static file\n").unwrap();
        fs::set_permissions(&txt, fs::Permissions::from_mode(0o644)).unwrap();
        for (path, info) in [
            ("/posts?x=1", "/posts"),
            ("/posts/1?x=1", "/posts/1"),
            ("/", "/"),
        ] {
            let target = format!("{prefix}{path}");
            let r = a.request("GET", &target, gz, Body::None);
            assert_eq!(r.header("content-encoding"), None, "{target}: {r:?}");
            assert!(length_ok(mode, &r, r.body.len()), "{target}: {r:?}");
            let j = r.echo();
            assert_eq!(j["mode"], mode, "{target}: {j}");
            assert_eq!(j["script_name"], prefix, "{target}: {j}");
            assert_eq!(j["path_info"], info, "{target}: {j}");
            assert_eq!(j["uri"], path, "{target}: {j}");
            assert_eq!(j["original_uri"], target, "{target}: {j}");
            assert_eq!(j["headers"]["accept-encoding"], "gzip", "{target}: {j}");
        }
    }
    assert_eq!(a.get("/blog").status, 301);
    // Debian's /icons/ alias takes the URL from the app at the root, and the site's own
    // icons/ folder with it; in /blog/ it is the app's.
    let icons = a.dir.join("public_html/icons");
    fs::create_dir_all(&icons).unwrap();
    fs::set_permissions(&icons, fs::Permissions::from_mode(0o755)).unwrap();
    fs::write(icons.join("site.txt"), "the site's own\n").unwrap();
    fs::set_permissions(icons.join("site.txt"), fs::Permissions::from_mode(0o644)).unwrap();
    for target in ["/icons/app-route", "/icons/site.txt"] {
        let r = a.get(target);
        assert_eq!(r.status, 404, "{target}: {r:?}");
        assert_eq!(
            r.header("content-type"),
            Some("text/html; charset=iso-8859-1"),
            "{target}: {r:?}"
        );
    }
    assert_eq!(a.get("/blog/icons/x").echo()["path_info"], "/icons/x");

    // A stream of three 100,000-byte chunks a second apart, the three sites at once.
    let stream = "/stream?chunks=3&size=100000&delay_ms=1000";
    let want = stream_body(3, 100_000);
    std::thread::scope(|s| {
        for (prefix, mode) in sites {
            let (a, want) = (&a, &want);
            s.spawn(move || {
                for gzip in [false, true] {
                    let target = format!("{prefix}{stream}");
                    let (r, first, total) = curl_timed(a, &target, gzip);
                    let what = format!(
                        "{target} gzip {gzip}: {first:?} {total:?} {} {:?}",
                        r.status, r.headers
                    );
                    assert_eq!(r.status, 200, "{what}");
                    assert!(r.body == *want, "{what}: the body differs");
                    let encoding = gzip.then_some("gzip");
                    assert_eq!(r.header("content-encoding"), encoding, "{what}");
                    assert_eq!(r.header("vary"), Some("Accept-Encoding"), "{what}");
                    assert!(total >= Duration::from_millis(1900), "{what}");
                    if mode == "cgi" && gzip {
                        // mod_deflate held it all: nothing came before the end.
                        assert!(first >= Duration::from_millis(1900), "{what}");
                    } else {
                        assert!(first < Duration::from_millis(900), "{what}");
                    }
                }
            });
        }
    });

    // 8 MiB with the app's Content-Length, GET and HEAD.
    let large = "/stream?chunks=8&size=1048576&length=8388608";
    let want = sha256_hex(&stream_body(8, 1 << 20));
    for (prefix, mode) in sites {
        let target = format!("{prefix}{large}");
        let head = |r: &Response| format!("{target}: {} {:?}", r.status, r.headers);
        let (r, _, _) = curl_timed(&a, &target, false);
        assert_eq!(r.status, 200, "{}", head(&r));
        assert_eq!(sha256_hex(&r.body), want, "{}", head(&r));
        assert!(length_ok(mode, &r, 8 << 20), "{}", head(&r));
        let (r, _, _) = curl_timed(&a, &target, true);
        assert_eq!(r.status, 200, "{}", head(&r));
        assert_eq!(sha256_hex(&r.body), want, "gzip {}", head(&r));
        assert_eq!(r.header("content-encoding"), Some("gzip"), "{}", head(&r));
        // Never the app's length; under mod_cgid, mod_deflate's own (it held it all).
        let length = r
            .header("content-length")
            .map(|n| n.parse::<usize>().unwrap());
        match mode {
            "fastcgi" => assert_eq!(
                (length, r.header("transfer-encoding")),
                (None, Some("chunked")),
                "{}",
                head(&r)
            ),
            _ => assert!(length.is_some_and(|n| n < 1 << 20), "{}", head(&r)),
        }
        for headers in [&[][..], gz] {
            let r = a.request("HEAD", &target, headers, Body::None);
            assert_eq!(r.status, 200, "HEAD {headers:?} {}", head(&r));
            assert_eq!(r.header("content-encoding"), None, "HEAD {}", head(&r));
            assert!(length_ok(mode, &r, 8 << 20), "HEAD {}", head(&r));
        }
    }

    // A 5 MiB upload, then a panic, then the next request.
    let data = noise(5 << 20, 7);
    for (prefix, mode) in sites {
        let target = format!("{prefix}/upload");
        let r = a.request("POST", &target, gz, Body::Fixed(&data));
        assert!(length_ok(mode, &r, r.body.len()), "{target}: {r:?}");
        let j = r.echo();
        assert_whole_body(&j, &data, &target);
        let r = a.request("GET", &format!("{prefix}/panic"), gz, Body::None);
        assert_eq!(r.status, 500, "{prefix}/panic: {r:?}");
        assert!(!r.text().contains("on purpose"), "{}", r.text());
        let next = a
            .request("GET", &format!("{prefix}/after"), gz, Body::None)
            .echo();
        assert_eq!(next["path_info"], "/after", "{next}");
        if mode == "fastcgi" {
            assert_eq!(pid_of(&next), pid_of(&j), "{next}");
        }
    }

    // MultiViews turned on in /blog/'s .htaccess: the file wins, and the binary's name
    // is no longer a route (negotiation finds mysite.fcgi, and cannot serve it).
    let ht = a.dir.join("public_html/blog/.htaccess");
    let mut text = fs::read_to_string(&ht).unwrap();
    text += "Options +MultiViews\n";
    fs::write(&ht, text).unwrap();
    let r = a.get("/blog/posts");
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.text(), "a static file\n");
    assert_eq!(r.header("content-location"), Some("posts.txt"), "{r:?}");
    assert_eq!(a.get("/blog/mysite").status, 404);
    assert_eq!(a.get("/blog/posts/1").status, 404);
    assert_eq!(a.get("/blog/x").echo()["path_info"], "/x");
}
