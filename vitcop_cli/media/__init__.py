"""Media in: from a path or URL to the frames a model sees.

    video.py         decode a clip (decord) or read an image; sample frame indices; ``Visual``
    decord_quiet.py  capture and word what decord's FFmpeg writes to stderr
    download.py      fetch an ``http(s)://`` clip into the cache (size cap, timeouts, atomic)
    netguard.py      which hosts ``serve`` may fetch from (SSRF policy: addresses, domains)
    pinned_http.py   a urllib opener whose connections go only to the checked address
    synthetic.py     a decoded synthetic clip for self-tests and benchmarks

Depends on the shared vocabulary (:mod:`vitcop_cli.errors`, :mod:`vitcop_cli.environment`,
:mod:`vitcop_cli.defaults`) only: no model, no front end.
"""
