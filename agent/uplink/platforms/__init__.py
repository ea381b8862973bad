"""Provincial and ministry platform uplinks: HTTP POST of encrypted JSON from the same outbox.

Modules (each with its own docstring):

    crypto      the envelopes: DES-CBC → Base64 → hex (Hebei V1.1), SM4-CBC → hex (ministry)
    records     outbox batches → platform items through a declarative field mapping
    hebei       the Hebei V1.1 profile (rtsData, eventsData, qybm/wgbm, DES)
    mem         the ministry-style profile ({"appid", "data"}, appsecret header, SM4)
    http        the HTTP client (the only module importing httpx): an agent.uplink.contract.Uplink
    forwarder   drains one outbox consumer into one platform, in order per stream
    receiver    reference receivers (`dust-agent platform-rehearse`)
    registry    profiles by name: envelope, key size, credentials, fields, uplink factory

docs/platforms.md is the installer's guide.
"""
