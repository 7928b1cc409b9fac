# uWSGI's quick-start WSGI app (its "Quickstart for Python/WSGI applications"), unchanged:
# tests/m2_pypi.rs runs it under uWSGI's mongrel2 plugin as a Mongrel2 handler.
def application(env, start_response):
    start_response('200 OK', [('Content-Type','text/html')])
    return [b"Hello World"]
