# Varnish in front of nginx and http-conditional (docs/scale-out.md).
#
# Varnish stores what the origin marks `public` for its `max-age`, and afterwards revalidates
# instead of refetching: past the TTL it sends the stored ETag and Last-Modified back
# (If-None-Match, If-Modified-Since), http-conditional answers 304 without running the script,
# and Varnish renews its copy from the 304's headers with no body on the wire. Everything
# private, per-visitor (Vary: Cookie, Set-Cookie) or uncacheable passes through untouched.
#
# Install as /etc/varnish/default.vcl; point the backend at nginx (nginx-conf/).

vcl 4.1;

backend default {
    .host = "127.0.0.1";
    .port = "8080";
    # Longer than the responder's script timeout (30 s), so its 504 reaches the client.
    .first_byte_timeout = 35s;
}

sub vcl_recv {
    # Only GET and HEAD are looked up; requests with Cookie or Authorization pass to the
    # origin (builtin.vcl, which runs after this). A client's own If-None-Match or
    # If-Modified-Since on a cached page is answered 304 by Varnish itself.
    if (req.method != "GET" && req.method != "HEAD") {
        return (pass);
    }
}

sub vcl_backend_response {
    # The 304 path: when the origin answers a revalidation with 304, beresp is the stored
    # object with the 304's headers merged in (beresp.was_304), so the checks below judge the
    # renewed headers, and the object is kept with a fresh TTL from its new max-age.

    # Private answers, answers that differ per visitor and anything the origin forbids to
    # store pass through: marked uncacheable (hit-for-miss) so requests do not queue on them.
    if (beresp.http.Cache-Control ~ "(?i)(^|[ ,])(private|no-store|no-cache)"
        || beresp.http.Vary ~ "(?i)(^|[ ,])(cookie|\*)([ ,]|$)"
        || beresp.http.Set-Cookie
        || beresp.http.Pragma ~ "(?i)no-cache") {
        set beresp.uncacheable = true;
        set beresp.ttl = 120s;
        return (deliver);
    }
    # Only what the origin marks public is stored (its `cache_privacy`): an undeclared script
    # that says nothing about caching is never kept on Varnish's default TTL.
    if (beresp.http.Cache-Control !~ "(?i)(^|[ ,])public([ ,]|$)") {
        set beresp.uncacheable = true;
        set beresp.ttl = 120s;
        return (deliver);
    }
    # The TTL is the origin's max-age (s-maxage first), as Varnish reads it by default,
    # however short. Grace: for 10 s past it, clients get the stored copy at once while one
    # background request revalidates it. Keep: for a day past that, the copy stays only for
    # its validators, so the next request revalidates (304) instead of fetching the body.
    set beresp.grace = 10s;
    set beresp.keep = 1d;
    return (deliver);
}
