"""A direct client of `envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit`.

grpcio carries the call; the messages are encoded and decoded here from the field
numbers of Envoy's protos (rls.proto, envoy/extensions/common/ratelimit/v3), so the tests
need no generated code and check the wire format independently of the Rust service:

    RateLimitRequest     1 domain, 2 descriptors (RateLimitDescriptor), 3 hits_addend (uint32)
    RateLimitDescriptor  1 entries (Entry: 1 key, 2 value), 2 limit (RateLimitOverride:
                         1 requests_per_unit, 2 unit), 3 hits_addend (UInt64Value: 1 value),
                         4 is_negative_hits (bool)
    RateLimitResponse    1 overall_code, 2 statuses (DescriptorStatus: 1 code,
                         2 current_limit (RateLimit: 1 requests_per_unit, 2 unit, 3 name),
                         3 limit_remaining, 4 duration_until_reset (Duration: 1 seconds, 2 nanos))
"""
import grpc

METHOD = "/envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit"
OK, OVER_LIMIT = 1, 2
UNITS = {"second": 1, "minute": 2, "hour": 3, "day": 4, "month": 5, "year": 6, "week": 7}


def _varint(n):
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _field(number, wire, payload):
    return _varint(number << 3 | wire) + payload


def _bytes(number, data):
    data = data.encode() if isinstance(data, str) else data
    return _field(number, 2, _varint(len(data)) + data)


def _uint(number, n):
    return _field(number, 0, _varint(n)) if n else b""


def descriptor(entries, hits=None, negative=False, override=None):
    """A RateLimitDescriptor: entries as [(key, value)]; hits: the per-descriptor
    hits_addend (None: unset, 0: an explicit zero); override: (requests_per_unit, unit)."""
    out = b"".join(_bytes(1, _bytes(1, k) + _bytes(2, v)) for k, v in entries)
    if override is not None:
        rpu, unit = override
        out += _bytes(2, _uint(1, rpu) + _uint(2, UNITS[unit]))
    if hits is not None:
        out += _bytes(3, _uint(1, hits))  # an explicit 0 is an empty UInt64Value, still present
    if negative:
        out += _uint(4, 1)
    return out


def request(domain, descriptors, hits_addend=0):
    return _bytes(1, domain) + b"".join(_bytes(2, d) for d in descriptors) + _uint(3, hits_addend)


def _parse(data):
    """{field number: [values]}: ints for varints, bytes for length-delimited."""
    fields, i = {}, 0
    while i < len(data):
        key, i = _read_varint(data, i)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, i = _read_varint(data, i)
        elif wire == 2:
            n, i = _read_varint(data, i)
            value, i = data[i:i + n], i + n
        else:
            raise ValueError(f"unexpected wire type {wire}")
        fields.setdefault(number, []).append(value)
    return fields


def _read_varint(data, i):
    shift = n = 0
    while True:
        b = data[i]
        i += 1
        n |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            return n, i


def _one(fields, number, default=0):
    return fields.get(number, [default])[-1]


def decode_response(data):
    f = _parse(data)
    statuses = []
    for raw in f.get(2, []):
        s = _parse(raw)
        status = {"code": _one(s, 1), "limit_remaining": _one(s, 3), "current_limit": None,
                  "duration_until_reset": None}
        if 2 in s:
            lim = _parse(_one(s, 2))
            status["current_limit"] = {"requests_per_unit": _one(lim, 1), "unit": _one(lim, 2),
                                       "name": _one(lim, 3, b"").decode()}
        if 4 in s:
            d = _parse(_one(s, 4))
            status["duration_until_reset"] = _one(d, 1) + _one(d, 2) / 1e9
        statuses.append(status)
    return {"overall_code": _one(f, 1), "statuses": statuses}


class Client:
    """grpc.RpcError propagates: e.code() is grpc.StatusCode.UNAVAILABLE etc."""

    def __init__(self, address):
        self.channel = grpc.insecure_channel(address)
        self.call = self.channel.unary_unary(METHOD)

    def should_rate_limit(self, domain, descriptors, hits_addend=0, timeout=5.0, metadata=None):
        raw = self.call(request(domain, descriptors, hits_addend), timeout=timeout, wait_for_ready=False,
                        metadata=metadata)
        return decode_response(raw)

    def close(self):
        self.channel.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
