"""Media in: from a path or URL to the frames a model sees.

    video.py         load a clip or an image into a ``Visual`` (decoded at the model's size when asked)
    sampling.py      which frames: qwen-vl-utils' count rule, rounded by the family's temporal patches
    decoders/        one small interface (base.py), one file per backend: decord (default), torchcodec, pyav
    chunked.py       read the sampled frames in bounded chunks on a background thread, resized and
                     preprocessed chunk by chunk on the caller's thread (memory bounded by the model's size)
    decord_quiet.py  capture and word what decord's FFmpeg writes to stderr
    names.py         file names in one-line messages (undecodable bytes and control characters escaped)
    download.py      fetch an ``http(s)://`` clip into the cache (size cap, timeouts, atomic)
    netguard.py      which hosts ``serve`` may fetch from (SSRF policy: addresses, domains)
    pinned_http.py   a urllib opener whose connections go only to the checked address; redirect bodies unread
    synthetic.py     a decoded synthetic clip for self-tests and benchmarks

Depends on the shared vocabulary (:mod:`vitcop_cli.errors`, :mod:`vitcop_cli.environment`,
:mod:`vitcop_cli.defaults`) only: no model, no front end. What size the frames take is the model's to say
(``FrameSizing``, built by :mod:`vitcop_cli.session.ingest` from the family's processor).
"""
