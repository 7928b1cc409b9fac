//! Config loading: the reference config from `../shared/docs/mongrel2.md`, m2sh's grammar
//! corners, and one error per validation rule (each naming file, line and column).

use super::route::Router;
use super::*;

const DOC_CONFIG: &str = r#"json_handler = Handler(send_spec='tcp://127.0.0.1:9997', send_ident='11111111-2222-3333-4444-555555555555',
                       recv_spec='tcp://127.0.0.1:9996', recv_ident='', protocol='json')
tnet_handler = Handler(send_spec='tcp://127.0.0.1:9995', send_ident='aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee',
                       recv_spec='tcp://127.0.0.1:9994', recv_ident='', protocol='tnetstring')
main = Server(uuid="f400bf85-4538-4f7a-8908-67e313d515c2", access_log="/logs/access.log",
    error_log="/logs/error.log", chroot="./", default_host="localhost", name="main",
    pid_file="/run/mongrel2.pid", bind_addr="127.0.0.1", port=6767,
    hosts=[Host(name="localhost", routes={'/json': json_handler, '@json': json_handler,
           '<msg': json_handler, '/tnet': tnet_handler,
           '/static/': Dir(base='static/', index_file='index.html', default_ctype='text/plain')})])
settings = {"server.daemonize": 0, "limits.content_length": 1024, "upload.temp_store": "/tmp/upload.XXXXXX"}
servers = [main]
"#;

#[test]
fn doc_config_loads() {
    let config = load("m2.conf", DOC_CONFIG.as_bytes()).unwrap();
    assert_eq!(config.servers.len(), 1);
    let server = config.server(Some("main")).unwrap();
    assert_eq!(
        (server.bind_addr.as_str(), server.port),
        ("127.0.0.1", 6767)
    );
    assert_eq!(server.hosts[0].routes.len(), 5);
    assert_eq!(config.handlers.len(), 2);
    assert_eq!(config.handlers[1].protocol, Protocol::Tnetstring);
    assert_eq!(config.setting("limits.content_length"), Some("1024"));
    assert!(settings::unsupported(&config.settings).is_empty());
    let paths: Vec<&str> = server.hosts[0]
        .routes
        .iter()
        .map(|r| r.path.as_str())
        .collect();
    // m2sh's breadth-first TST order (route ids from a real `m2sh load` of this file).
    assert_eq!(paths, ["/json", "/tnet", "<msg", "@json", "/static/"]);
}

#[test]
fn m2sh_grammar_corners() {
    let text = "# leading comment\nh = Handler(, send_spec='a' send_ident='b\\'c', recv_spec=\"r\" recv_ident='')\n\
                s = Server(uuid='u' access_log='a' error_log='e' pid_file='p' default_host='x' name='n' port=1\n\
                hosts=[, Host(name='x', routes={, '/a(\\d+)': h '/b': h})])\nservers = [s]";
    let config = load("c", text.as_bytes()).unwrap();
    assert_eq!(config.handlers[0].send_ident, "b\\'c");
    assert_eq!(config.servers[0].hosts[0].routes[1].path, "/a(\\d+)");
}

fn error(text: &str) -> String {
    load("f.conf", text.as_bytes()).unwrap_err().to_string()
}

#[test]
fn errors_name_file_line_and_cause() {
    let base = "h = Handler(send_spec='a', send_ident='b', recv_spec='r', recv_ident='')\n";
    let server = |extra: &str, routes: &str| {
        format!("{base}s = Server(uuid='u', access_log='a', error_log='e', pid_file='p', default_host='x', name='n', port=1{extra},\n  hosts=[Host(name='x', routes={{{routes}}})])\nservers = [s]\n")
    };
    assert_eq!(
        error(&server("", "'/': h,")),
        "f.conf:3:40: syntax error: expected an item after ',', found '}'"
    );
    assert!(
        error(&server(", colour='red'", "'/': h")).starts_with("f.conf:2:"),
        "{}",
        error(&server(", colour='red'", "'/': h"))
    );
    assert!(
        error(&server(", colour='red'", "'/': h")).ends_with("Server has no parameter 'colour'")
    );
    assert!(error(&server(", port=2", "'/': h")).contains("'port' is given twice"));
    assert!(error(&server("", "'/': nothing")).contains("no variable named 'nothing'"));
    assert!(error(&server("", "'/': h, '/': h")).contains("'/' is given twice in one dict"));
    assert!(error(&server("", "'/([': h")).ends_with("route '/([': '[' without ']' in pattern"));
    assert!(error(&server(
        "",
        "'/': Dir(base='x', index_file='i', default_ctype='t')"
    ))
    .contains("must end with '/'"));
    assert!(error(&server("", "'/': Proxy(addr='x')")).contains("Proxy is missing 'port'"));
    assert!(error(&server(", use_ssl='1'", "'/': h")).contains("'use_ssl' must be a number"));
    assert!(error(&server("", "'/': h").replace("port=1", "port=70000"))
        .contains("'port' must be at most 65535"));
    assert!(error("x = 1\n").contains("no 'servers' list"));
    assert!(error("x = 1\ny = $\n").starts_with("f.conf:2:5: invalid character"));
    assert!(error("x = 'abc\n").starts_with("f.conf:1:5: string is not closed"));
    assert!(error("servers = [s]\ns = Host(name='x', routes={})\n")
        .contains("expected a Server(...), found Host(...)"));
    let bad_setting = format!(
        "{}settings = {{'limits.min_ping': 'soon'}}\n",
        server("", "'/': h")
    );
    assert!(error(&bad_setting).contains("setting 'limits.min_ping': 'soon' is not an integer"));
}

#[test]
fn router_follows_mongrel2() {
    let text = "h = Handler(send_spec='a', send_ident='b', recv_spec='r', recv_ident='')\n\
        t = Handler(send_spec='c', send_ident='d', recv_spec='e', recv_ident='')\n\
        s = Server(uuid='u', access_log='a', error_log='e', pid_file='p', default_host='main', name='n', port=1,\n\
        hosts=[Host(name='main', routes={'/json': h, '/users/(\\d+)/x': h, '/users/': t, '/num(\\d+)/x': h, '/': t}),\n\
               Host(name='api', matching='api.example.com', routes={'/': h}),\n\
               Host(name='wild', matching='(\\a+).wild.org', routes={'/w': h})])\nservers = [s]";
    let config = load("r", text.as_bytes()).unwrap();
    let server = &config.servers[0];
    let router = Router::new(&server.hosts, &server.default_host);
    let pattern = |host: Option<&str>, path: &str| {
        router
            .resolve(host.map(str::as_bytes), path.as_bytes())
            .map(|found| (found.host, found.pattern.to_owned()))
    };
    assert_eq!(pattern(None, "/json/x"), Some((0, "/json".into())));
    assert_eq!(pattern(None, "/js"), Some((0, "/json".into())));
    // '/users/' is loaded first (shallower in m2sh's tree), so the pattern route sharing its
    // prefix is never tried: what real Mongrel2 does (tests/m2_parity.rs).
    assert_eq!(pattern(None, "/users/42/x"), Some((0, "/users/".into())));
    assert_eq!(pattern(None, "/num42/x"), Some((0, "/num(\\d+)/x".into())));
    assert_eq!(pattern(None, "/numx"), None);
    assert_eq!(pattern(None, "/other"), Some((0, "/".into())));
    assert_eq!(
        pattern(Some("api.example.com"), "/x"),
        Some((1, "/".into()))
    );
    assert_eq!(
        pattern(Some("v2.api.example.com"), "/x"),
        Some((1, "/".into()))
    );
    assert_eq!(
        pattern(Some("nothing.net"), "/other"),
        Some((0, "/".into()))
    );
    assert_eq!(pattern(Some("abc.wild.org"), "/w"), Some((2, "/w".into())));
    assert_eq!(
        pattern(Some("a1.wild.org"), "/other"),
        Some((0, "/".into()))
    );
}

#[test]
fn mime_types() {
    let map = mime::MimeMap::new(&[(".foo".into(), "application/x-foo".into())]);
    assert_eq!(map.content_type(b"/a/b.HTML", "text/plain"), "text/html");
    assert_eq!(
        map.content_type(b"/a/b.foo", "text/plain"),
        "application/x-foo"
    );
    assert_eq!(
        map.content_type(b"/a/b.nothing", "text/plain"),
        "text/plain"
    );
    assert_eq!(map.content_type(b"/a/b.css", "x"), "text/css");
}
