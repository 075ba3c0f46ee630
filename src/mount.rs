//! The mount path: which part of the URL is the app's prefix ("script name") and which
//! is the app-relative path, rebuilt from what Apache, lighttpd or nginx actually send.

use std::borrow::Cow;

use crate::vars::Vars;

/// Where the app is mounted and what path the request is for, relative to that.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    /// The mount prefix, as the client sees it: `""` at the site root, `"/blog"` under
    /// a subdirectory. Never ends with `/`.
    pub script_name: String,
    /// The app-relative path, percent-decoded as CGI defines `PATH_INFO`; may be empty
    /// (the app's root). Bytes, because a decoded path need not be UTF-8.
    pub path_info: Vec<u8>,
    /// Which rule produced `script_name`.
    pub source: MountSource,
    /// The query, when the server's `QUERY_STRING` lost it (see
    /// [`MountSource::CutByRewrite`]) or is not UTF-8 (then percent-encoded, as in the
    /// request's URI); `None` when `QUERY_STRING` is right as it is.
    pub query: Option<Vec<u8>>,
}

/// Which variable the mount prefix was rebuilt from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MountSource {
    /// `FORCE_SCRIPT_NAME`, per request or from the process settings.
    Forced,
    /// Apache mod_rewrite's `SCRIPT_URL` minus `PATH_INFO`.
    ScriptUrl,
    /// `REDIRECT_URL` minus `PATH_INFO` (Apache after an internal redirect).
    RedirectUrl,
    /// The percent-decoded path of `REQUEST_URI` minus `PATH_INFO`.
    RequestUri,
    /// `SCRIPT_NAME` as sent.
    ScriptName,
    /// The request path and query of `REQUEST_URI`: Apache's mod_rewrite decoded a
    /// `%23` into `#` in the rewritten URL and cut `PATH_INFO` and `QUERY_STRING` there
    /// (without the `B=#` flag); the mount is the rewrite target's folder.
    CutByRewrite,
    /// The folder of `SCRIPT_NAME`, the path being the decoded `REQUEST_URI` path below
    /// it: the request was rewritten to the script with no path after it
    /// (`FallbackResource /blog/mysite.fcgi`, `RewriteRule ^ mysite.fcgi`), or
    /// mod_rewrite decoded the path a second time (`/blog/100%2541` gave
    /// `PATH_INFO=/100A`).
    ScriptFolder,
}

/// Rebuilds the mount prefix and app-relative path of one request.
///
/// `forced` is the process-wide `FORCE_SCRIPT_NAME` setting, if any; a per-request
/// `FORCE_SCRIPT_NAME` (or Apache's `REDIRECT_FORCE_SCRIPT_NAME`) variable wins over it.
/// `exe_name` is the file name of the running program (`mysite.fcgi`), used to tell a
/// script mount (`SCRIPT_NAME=/blog/mysite.fcgi`) from a server that did not split the
/// path at all (nginx without `fastcgi_split_path_info`, lighttpd mounted at `/`,
/// where the whole path lands in `SCRIPT_NAME` and `PATH_INFO` is empty).
///
/// Order: forced; else `SCRIPT_URL`, else `REDIRECT_URL`, minus `PATH_INFO` when it
/// really ends with it; else the decoded `REQUEST_URI` path minus `PATH_INFO` when it
/// ends with it; else `SCRIPT_NAME`. Paths are compared after collapsing `//` and
/// removing `.`/`..` segments. An empty `PATH_INFO` is only a suffix of the script's
/// own URL: any other request path was rewritten to the script (see
/// [`MountSource::ScriptFolder`]) or, from nginx's `rewrite ... break`, carries the
/// app-relative path in `SCRIPT_NAME`.
pub fn rebuild(vars: &Vars, forced: Option<&str>, exe_name: Option<&str>) -> Mount {
    let mut script_name: &[u8] = vars.get("SCRIPT_NAME").unwrap_or_default();
    let mut path_info: Vec<u8> = vars.get("PATH_INFO").unwrap_or_default().to_vec();
    let request_path: Option<Cow<'_, [u8]>> = vars.get("REQUEST_URI").map(|uri| {
        let path = uri.split(|&b| b == b'?').next().unwrap_or_default();
        let path = origin_path(path);
        match percent_decode(path) {
            Cow::Borrowed(p) => normalize(p),
            Cow::Owned(p) => Cow::Owned(normalize(&p).into_owned()),
        }
    });
    // The server only split the URL (no rewrite): SCRIPT_NAME + PATH_INFO is the path.
    // (The request path is normalised, so equal bytes need no normalising.)
    let split_only = request_path
        .as_deref()
        .is_some_and(|rp| is_joined(rp, script_name, &path_info));

    // No split: the whole path is in SCRIPT_NAME (nginx's stock fastcgi_params,
    // lighttpd at "/", Apache mod_proxy_fcgi/scgi), or in neither variable (nginx's
    // stock scgi_params). Only when the script is not our own file: a request for
    // /blog/mysite.fcgi itself, or for the root of `ScriptAlias /app /path/mysite.fcgi`
    // (SCRIPT_NAME=/app, SCRIPT_FILENAME naming our file), is a script mount with an
    // empty path.
    let unsplit = path_info.is_empty()
        && !is_own_script(script_name, exe_name)
        && !is_own_script(vars.get("SCRIPT_FILENAME").unwrap_or_default(), exe_name)
        && (if script_name.is_empty() {
            request_path.is_some()
        } else {
            request_path.is_none() || split_only
        });
    if unsplit {
        path_info = match (proxied_path(vars, script_name), &request_path) {
            // Apache mod_proxy_fcgi/scgi: `SCRIPT_FILENAME=proxy:fcgi://host:port/rest`
            // (or `/rest` alone, `ProxyFCGIBackendType GENERIC`), where `rest` is the
            // path below the ProxyPass prefix. (`rest` starts with `/`: a suffix of the
            // request path starts at a segment boundary.)
            (Some(rest), Some(rp)) if rp.ends_with(&rest) => rest,
            // `ProxyPass "/app" "fcgi://..."` (no trailing slashes) proxies `/app`
            // itself, with the backend path `/` as for `/app/`: the prefix's root.
            (Some(rest), Some(_)) if rest == b"/" => Vec::new(),
            _ if script_name.is_empty() => request_path
                .as_deref()
                .map(<[u8]>::to_vec)
                .unwrap_or_default(),
            _ => script_name.to_vec(),
        };
        script_name = b"";
    }

    // No PATH_INFO although the request path is not the script's own URL: the split
    // below works from the request path alone.
    let no_path = match &request_path {
        Some(rp) if path_info.is_empty() && !unsplit => {
            without_path_info(rp, script_name, exe_name)
        }
        _ => None,
    };

    let per_request = vars
        .get_str("FORCE_SCRIPT_NAME")
        .or_else(|| vars.get_str("REDIRECT_FORCE_SCRIPT_NAME"));
    if let Some(f) = per_request.or(forced) {
        let prefix = trim_trailing_slash(f.as_bytes());
        // The repairs of mod_rewrite's `%23` cut and second decoding below apply under
        // a forced prefix too.
        let cut = request_path.as_deref().and_then(|rp| {
            let pi = normalize(&path_info);
            cut_by_rewrite(vars, rp, script_name, &pi, exe_name)
                .or_else(|| decoded_twice(rp, script_name, &pi, exe_name))
                .map(|cut| (strip_path_prefix(rp, prefix).map(<[u8]>::to_vec), cut))
        });
        // Where the server only split the path, its split may be wrong (lighttpd mounted
        // at "/" splits after the first segment; nginx without fastcgi_split_path_info
        // does not split), or did not split it at all: the path is then the request
        // path minus the forced prefix.
        let whole = match (&request_path, split_only) {
            (Some(rp), true) => Some(rp.to_vec()),
            _ if unsplit => Some(path_info.clone()),
            (Some(rp), _) if no_path.is_some() => Some(rp.to_vec()),
            _ => None,
        };
        if let Some(rest) = whole.as_deref().and_then(|w| strip_path_prefix(w, prefix)) {
            path_info = rest.to_vec();
        }
        let mut m = finish(prefix, path_info, MountSource::Forced);
        if let Some((below_prefix, cut)) = cut {
            m.path_info = below_prefix.unwrap_or(cut.path_info);
            m.query = cut.query;
        }
        return m;
    }
    if let Some(m) = no_path {
        return m;
    }

    let pi = normalize(&path_info);
    // A `#` in a prefix but not in the script's own URL (a folder may have one in its
    // name) is mod_rewrite's `%23` decoding at work: a `PATH_INFO` cut there can still
    // end the URL by chance (`/blog/x%23/x`), and [`cut_by_rewrite`] is the repair.
    let no_hash = |prefix: &&[u8]| script_name.contains(&b'#') || !prefix.contains(&b'#');
    for (name, source) in [
        ("SCRIPT_URL", MountSource::ScriptUrl),
        ("REDIRECT_URL", MountSource::RedirectUrl),
    ] {
        if let Some(url) = vars.get(name).filter(|u| !u.is_empty()) {
            if let Some(prefix) = strip_suffix(&normalize(url), &pi).filter(no_hash) {
                return finish(prefix, path_info, source);
            }
        }
    }
    if let Some(rp) = &request_path {
        if let Some(prefix) = strip_suffix(rp, &pi).filter(no_hash) {
            return finish(prefix, path_info, MountSource::RequestUri);
        }
        if let Some(m) = cut_by_rewrite(vars, rp, script_name, &pi, exe_name) {
            return m;
        }
        if let Some(m) = decoded_twice(rp, script_name, &pi, exe_name) {
            return m;
        }
    }
    finish(script_name, path_info, MountSource::ScriptName)
}

/// The mount when `PATH_INFO` is empty and the server did split the URL, for a request
/// path `rp` other than the script's own URL (`None` for that one: a request for
/// `/blog/mysite.fcgi` itself, or the root of `ScriptAlias /app ...`, is a script
/// mount with an empty path).
/// - `SCRIPT_NAME` is not our file and ends the request path: nginx's
///   `rewrite ^/blog(/.*)$ $1 break` with the stock `fastcgi_params` sends the
///   rewritten, app-relative path as `SCRIPT_NAME`; the mount is what comes before it.
/// - Otherwise the request was rewritten to the script with no path after it
///   (`FallbackResource`, `RewriteRule ^ mysite.fcgi`): the mount is the script's
///   folder and the path the request path below it; the site root and the whole path
///   when the request path is elsewhere (a rewrite from another folder).
fn without_path_info(rp: &[u8], script_name: &[u8], exe_name: Option<&str>) -> Option<Mount> {
    let sn = normalize(script_name);
    if sn.is_empty() || rp == &*sn {
        return None;
    }
    let suffix = strip_suffix(rp, &sn);
    if is_own_script(&sn, exe_name) {
        if suffix.is_some() {
            return None;
        }
    } else if let Some(prefix) = suffix {
        return Some(finish(prefix, sn.into_owned(), MountSource::RequestUri));
    }
    let folder = &sn[..sn.iter().rposition(|&b| b == b'/').unwrap_or(0)];
    Some(match strip_path_prefix(rp, folder) {
        Some(rest) => finish(folder, rest.to_vec(), MountSource::ScriptFolder),
        None => finish(b"", rp.to_vec(), MountSource::RequestUri),
    })
}

/// mod_rewrite in `.htaccess` decodes the rewritten URL once more (without the `B`
/// flag), so `/blog/100%2541` reaches the script as `PATH_INFO=/100A`: recognised when
/// the request was for our script's folder and the path below it, decoded again, is
/// `PATH_INFO`; the path is then the request's own, decoded once.
fn decoded_twice(
    rp: &[u8],
    script_name: &[u8],
    path_info: &[u8],
    exe_name: Option<&str>,
) -> Option<Mount> {
    if !rp.contains(&b'%') || !is_own_script(script_name, exe_name) {
        return None;
    }
    let folder = script_name
        .strip_suffix(exe_name?.as_bytes())?
        .strip_suffix(b"/")?;
    let rest = strip_path_prefix(rp, folder)?;
    // Decoding again must change something: otherwise the server decoded once, and
    // `PATH_INFO` is right as it is (which matters under a forced prefix).
    let twice = percent_decode(rest);
    (*twice != *rest && *normalize(&twice) == *path_info)
        .then(|| finish(folder, rest.to_vec(), MountSource::ScriptFolder))
}

/// A `%23` in the URL, which mod_rewrite (without `B=#`) decodes into the rewritten
/// URL, where the `#` ends it: `/blog/a%23b?q=1` becomes `mysite.fcgi/a` with no query.
/// Recognised when the decoded request path has a `#` (a client never sends a raw
/// one), the request was rewritten to our own script, and the request path is under
/// that script's folder and continues the cut `PATH_INFO` (or, up to the `#`, is
/// `PATH_INFO` once decoded again); the path and query are then the request's own.
fn cut_by_rewrite(
    vars: &Vars,
    request_path: &[u8],
    script_name: &[u8],
    path_info: &[u8],
    exe_name: Option<&str>,
) -> Option<Mount> {
    if !request_path.contains(&b'#')
        || vars.get("REDIRECT_URL").is_none()
        || !is_own_script(script_name, exe_name)
    {
        return None;
    }
    // `SCRIPT_NAME` is `<folder>/<exe>`; one without the slash is no script mount.
    let folder = script_name
        .strip_suffix(exe_name?.as_bytes())?
        .strip_suffix(b"/")?;
    let rest = strip_path_prefix(request_path, folder)?;
    // What was left before the `#` is decoded once more (see [`decoded_twice`]): a
    // `%25XX` before the `%23` (`/blog/%2541%23?q=1`) gives `PATH_INFO=/A`, not `/%41`.
    let before_hash = rest.split(|&b| b == b'#').next().unwrap_or_default();
    if !rest.starts_with(path_info) && *normalize(&percent_decode(before_hash)) != *path_info {
        return None;
    }
    let uri = vars.get("REQUEST_URI")?;
    let query = uri
        .iter()
        .position(|&b| b == b'?')
        .map_or(&b""[..], |q| &uri[q + 1..]);
    let mut m = finish(folder, rest.to_vec(), MountSource::CutByRewrite);
    m.query = Some(query.to_vec());
    Some(m)
}

/// The backend path of Apache mod_proxy_fcgi/mod_proxy_scgi, decoded and normalised:
/// `SCRIPT_FILENAME` of the form `proxy:fcgi://127.0.0.1:9000/posts/1` (the default,
/// `ProxyFCGIBackendType FPM`), or the backend path alone, `/posts/1`, under
/// `ProxyFCGIBackendType GENERIC` (which Apache's docs advise for backends other than
/// PHP-FPM). The caller only asks when the server did not split the path
/// (`SCRIPT_NAME` is the whole request path, no `PATH_INFO`) and uses the path only
/// when the request path ends with it (or it is `/`, the prefix's root). A file-system
/// `SCRIPT_FILENAME` (CGI, nginx's `$document_root$fastcgi_script_name`) is the
/// document root plus `SCRIPT_NAME`, or a script's file, and never such a suffix of
/// the request path (unless the document root is `/`, where the prefix found is `""`,
/// as without this rule). GENERIC always sends a `SCRIPT_NAME`: without one, a
/// file-system `SCRIPT_FILENAME` is not taken.
fn proxied_path(vars: &Vars, script_name: &[u8]) -> Option<Vec<u8>> {
    let f = vars.get("SCRIPT_FILENAME")?;
    let path = match f.strip_prefix(b"proxy:") {
        Some(rest) => {
            let after_scheme = rest.windows(3).position(|w| w == b"://")? + 3;
            let rest = &rest[after_scheme..];
            &rest[rest.iter().position(|&b| b == b'/')?..]
        }
        None if f.starts_with(b"/") && !script_name.is_empty() => f,
        None => return None,
    };
    let path = path.split(|&b| b == b'?').next().unwrap_or_default();
    Some(normalize(&percent_decode(path)).into_owned())
}

/// The path of a request target in absolute form (`http://host/blog/x`, which HTTP/1.1
/// servers accept and Apache passes on as `REQUEST_URI`): what follows the authority,
/// `/` when nothing does. Any other target is returned as it is. Without this the
/// scheme and a client-chosen host would end up in the mount prefix.
fn origin_path(target: &[u8]) -> &[u8] {
    match split_absolute(target) {
        Some((_, _, rest)) if rest.starts_with(b"/") => rest,
        Some(_) => b"/",
        None => target,
    }
}

/// A URL in absolute form, `scheme://authority` + the rest (which starts with `/`,
/// `?` or `#`, or is empty); `None` for anything else.
pub(crate) fn split_absolute(target: &[u8]) -> Option<(&[u8], &[u8], &[u8])> {
    let colon = target.iter().position(|&b| b == b':')?;
    let scheme = &target[..colon];
    let is_scheme = scheme.first().is_some_and(u8::is_ascii_alphabetic)
        && scheme
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'));
    let after = target[colon..].strip_prefix(b"://").filter(|_| is_scheme)?;
    let end = after
        .iter()
        .position(|&b| matches!(b, b'/' | b'?' | b'#'))
        .unwrap_or(after.len());
    Some((scheme, &after[..end], &after[end..]))
}

fn finish(prefix: &[u8], path_info: Vec<u8>, source: MountSource) -> Mount {
    let prefix = trim_trailing_slash(prefix);
    let mut script_name = String::from_utf8_lossy(prefix).into_owned();
    if !script_name.is_empty() && !script_name.starts_with('/') {
        script_name.insert(0, '/');
    }
    Mount {
        script_name,
        path_info,
        source,
        query: None,
    }
}

/// `url` minus a trailing `suffix`, if it really ends with it. `suffix` starts with `/`
/// (or is empty), so the cut is always at a segment boundary.
fn strip_suffix<'a>(url: &'a [u8], suffix: &[u8]) -> Option<&'a [u8]> {
    if suffix.is_empty() {
        return Some(url);
    }
    if suffix.first() != Some(&b'/') {
        return None;
    }
    url.strip_suffix(suffix)
}

/// `path` minus a leading `prefix` that ends at a segment boundary.
fn strip_path_prefix<'a>(path: &'a [u8], prefix: &[u8]) -> Option<&'a [u8]> {
    let rest = path.strip_prefix(prefix)?;
    (rest.is_empty() || rest[0] == b'/').then_some(rest)
}

/// True when the last segment of `path` (a URL path or a file path) is our file name.
fn is_own_script(path: &[u8], exe_name: Option<&str>) -> bool {
    let Some(exe) = exe_name else { return false };
    let last = path.rsplit(|&b| b == b'/').next().unwrap_or_default();
    !exe.is_empty() && last == exe.as_bytes()
}

fn trim_trailing_slash(p: &[u8]) -> &[u8] {
    let mut p = p;
    while let Some(rest) = p.strip_suffix(b"/") {
        p = rest;
    }
    p
}

/// Decodes `%XX` escapes; a `%` not followed by two hex digits stays as it is.
pub fn percent_decode(s: &[u8]) -> Cow<'_, [u8]> {
    if !s.contains(&b'%') {
        return Cow::Borrowed(s);
    }
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        if s[i] == b'%' && i + 2 < s.len() {
            if let (Some(h), Some(l)) = (hex(s[i + 1]), hex(s[i + 2])) {
                out.push(h << 4 | l);
                i += 3;
                continue;
            }
        }
        out.push(s[i]);
        i += 1;
    }
    Cow::Owned(out)
}

pub(crate) fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Collapses repeated `/` and removes `.` and `..` segments, as web servers do before
/// they compute `PATH_INFO`. Keeps a trailing slash. Borrows a path that is already
/// normal (the common case).
pub fn normalize(path: &[u8]) -> Cow<'_, [u8]> {
    if is_normal(path) {
        return Cow::Borrowed(path);
    }
    let mut segs: Vec<&[u8]> = Vec::new();
    let mut trailing = false;
    for seg in path.split(|&b| b == b'/') {
        trailing = false;
        match seg {
            b"" => trailing = true,
            b"." => trailing = true,
            b".." => {
                segs.pop();
                trailing = true;
            }
            s => segs.push(s),
        }
    }
    let mut out = Vec::with_capacity(path.len());
    for s in &segs {
        out.push(b'/');
        out.extend_from_slice(s);
    }
    if ((trailing && path.len() > 1) || out.is_empty())
        && (path.starts_with(b"/") || !out.is_empty())
    {
        out.push(b'/');
    }
    Cow::Owned(out)
}

/// Whether the normalised `rp` is `script` + `path` once normalised. Joins and
/// normalises only when the pieces are not already normal, so the usual case does not
/// allocate.
fn is_joined(rp: &[u8], script: &[u8], path: &[u8]) -> bool {
    if rp.len() == script.len() + path.len() && rp.starts_with(script) && rp.ends_with(path) {
        return true;
    }
    // Two normal pieces make a normal whole when the join adds no `//` (a path that
    // is not empty starts with `/`; the script must not end with one).
    let normal_join =
        is_normal(script) && (path.is_empty() || (is_normal(path) && !script.ends_with(b"/")));
    // A normal whole is compared as it is, which the test above already did.
    !normal_join && *rp == *normalize(&[script, path].concat())
}

/// True when [`normalize`] would return `path` unchanged: empty, or absolute with no
/// empty segment (but a trailing slash) and no `.` or `..` segment.
fn is_normal(path: &[u8]) -> bool {
    let Some(rest) = path.strip_prefix(b"/") else {
        return path.is_empty();
    };
    let mut segs = rest.split(|&b| b == b'/').peekable();
    while let Some(seg) = segs.next() {
        match seg {
            b"" if segs.peek().is_some() => return false,
            b"." | b".." => return false,
            _ => {}
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalize_paths() {
        assert_eq!(&*normalize(b"/a//b"), &b"/a/b"[..]);
        assert_eq!(&*normalize(b"/a/./b/../c"), &b"/a/c"[..]);
        assert_eq!(&*normalize(b"/a/b/"), &b"/a/b/"[..]);
        assert_eq!(&*normalize(b"/"), &b"/"[..]);
        assert_eq!(&*normalize(b"//"), &b"/"[..]);
        assert_eq!(&*normalize(b""), &b""[..]);
        assert_eq!(&*normalize(b"/.."), &b"/"[..]);
        assert_eq!(&*normalize(b"/a/.."), &b"/"[..]);
    }

    /// Every path of up to `max` bytes over the bytes that matter to normalising.
    fn small_paths(max: usize) -> Vec<Vec<u8>> {
        let mut all: Vec<Vec<u8>> = vec![Vec::new()];
        let mut last = vec![Vec::new()];
        for _ in 0..max {
            last = last
                .iter()
                .flat_map(|p: &Vec<u8>| [b'/', b'.', b'a'].map(|b| [&p[..], &[b]].concat()))
                .collect();
            all.extend(last.iter().cloned());
        }
        all
    }

    #[test]
    fn the_fast_path_agrees_with_the_full_normalisation() {
        let paths = small_paths(7);
        assert_eq!(paths.len(), (0..=7).map(|n| 3usize.pow(n)).sum::<usize>());
        let mut normal = 0;
        for p in &paths {
            let n = normalize(p);
            if is_normal(p) {
                normal += 1;
                assert_eq!(&*n, &p[..], "{:?}", String::from_utf8_lossy(p));
            }
            // What normalize returns is normal, and so returned unchanged.
            assert!(is_normal(&n), "{:?}", String::from_utf8_lossy(&n));
        }
        assert!(normal > 100, "{normal}");
    }

    #[test]
    fn the_join_shortcut_agrees_with_joining() {
        // Every script and path of up to 4 bytes, against every normal request path
        // among them: 121 x 121 x (the normal ones).
        let all = small_paths(4);
        let normals: Vec<&Vec<u8>> = all.iter().filter(|p| is_normal(p)).collect();
        let mut joined = 0;
        for script in &all {
            for path in &all {
                let whole = normalize(&[&script[..], &path[..]].concat()).into_owned();
                for rp in &normals {
                    let want = **rp == whole;
                    joined += usize::from(want);
                    assert_eq!(
                        is_joined(rp, script, path),
                        want,
                        "{:?} {:?} {:?}",
                        String::from_utf8_lossy(rp),
                        String::from_utf8_lossy(script),
                        String::from_utf8_lossy(path)
                    );
                }
            }
        }
        assert!(joined > 1000, "{joined}");
    }

    #[test]
    fn decode() {
        assert_eq!(
            &*percent_decode(b"/caf%C3%A9/a%20b"),
            "/café/a b".as_bytes()
        );
        assert_eq!(&*percent_decode(b"/100%"), &b"/100%"[..]);
        assert_eq!(&*percent_decode(b"/%zz%4"), &b"/%zz%4"[..]);
        assert_eq!(&*percent_decode(b"%41"), &b"A"[..]);
    }
}
