"""Settings, read once at start-up (only ``cli`` reads argv and the environment)."""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import urlsplit

from livecommerce.errors import ConfigError

REDIS_CLUSTER_SCHEMES = ("redis+cluster://", "rediss+cluster://")
"""``--redis-url`` schemes that name a Redis Cluster (any one node of it; the client
discovers the rest). ``rediss+cluster://`` is the same over TLS."""


@dataclass(frozen=True, kw_only=True)
class Limits:
    """Protocol limits; the defaults are those of PROTOCOL.md."""

    max_frame: int = 8 * 1024
    """Largest client frame answered normally; larger gets ``too_large``."""
    hard_max_frame: int = 64 * 1024
    """Larger than this, the connection is closed with 1009."""
    chat_max_chars: int = 500
    chat_rate: float = 1.0
    chat_burst: int = 3
    like_rate: float = 5.0
    like_burst: int = 5
    order_rate: float = 5.0
    order_burst: int = 5
    commerce_rate: float = 5.0
    """pin, unpin, sale.start and sale.stop per second per user."""
    commerce_burst: int = 5
    staff_rate: float = 2.0
    """announce and mod.* per second per user."""
    staff_burst: int = 10
    join_rate: float = 2.0
    """join per second per user (a guest: per connection)."""
    join_burst: int = 10
    create_rate: float = 0.1
    """Rooms created per second per user."""
    create_burst: int = 5
    product_rate: float = 5.0
    """Products created or changed per second per user (a lineup: bursts of 50)."""
    product_burst: int = 50
    max_filter_terms: int = 1000
    """Terms of one room's word filter."""
    connections_per_user: int = 20
    """A user's WebSocket connections to one server process (a guest's are each their own)."""
    abuse_burst: int = 20
    """Refused or invalid commands a connection may send in a burst before 4008."""
    abuse_rate: float = 2.0
    """Refused or invalid commands per second a connection may sustain."""
    connect_timeout_s: float = 10.0
    recent_chats: int = 50


@dataclass(frozen=True, kw_only=True)
class Retention:
    """How long each kind of data is kept, in days (clips: ``media_retention_s``). The
    sweeper deletes what is older, once an hour."""

    chat_days: float = 90
    """The chat archive (an export's source); the history keeps its last lines anyway."""
    modlog_days: float = 365
    """The moderation log."""
    orders_days: float = 730
    """Orders that ended (paid, expired, cancelled, refunded): the shop keeps its own."""
    analytics_days: float = 400
    """The minute-by-minute figures of a show (its totals stay)."""


@dataclass(frozen=True, kw_only=True)
class Settings:
    """Everything the server needs to know, as one frozen value.

    Raises:
        ConfigError: from :meth:`check` when the combination cannot run.
    """

    host: str = "127.0.0.1"
    port: int = 8080
    redis_url: str | None = None
    """``redis://`` (one Redis), or ``redis+cluster://host:port`` (Redis Cluster)."""
    secret: str | None = None
    demo: bool = False
    tick_ms: int = 50
    """Fan-out tick: events of one tick go out as one frame per room. This is a small
    room's tick; a large room's grows (see ``fanout_share``)."""
    tick_max_ms: int = 250
    """The longest a large room's tick grows (at or below ``tick_ms``: it does not)."""
    fanout_share: float = 0.30
    """The share of a core one room's fan-out passes may take in one process before its
    tick grows (``rooms/hub.py``, ``adapt_tick``)."""
    presence_interval_ms: int = 1000
    history_size: int = 1000
    """Events kept per room for recovery with ``since``."""
    outbound_limit: int = 512 * 1024
    """Bytes queued for one connection beyond which it is closed with 4009."""
    socket_sndbuf: int = 64 * 1024
    """Kernel send buffer per client socket (0 = the kernel's autotuning, up to 4 MiB
    here). Bounded, so a stalled reader shows in the outbound queue within seconds."""
    max_lag_s: float = 5.0
    """A connection whose queue has not drained for this long is closed with 4009."""
    stall_s: float = 2.5
    """A connection whose client took less than half of what its kernel acknowledged
    over about this long, twice in a row, is closed with 4009 (``http/stalls.py``; 0 = off)."""
    drain_timeout_s: float = 5.0
    hold_s: int = 300
    """Payment window of a hold."""
    sweep_interval_ms: int = 500
    """How often expired holds and ended sales are looked for."""
    reserve_batch: int = 256
    """The most order attempts served by one store call."""
    token_ttl_s: int = 12 * 3600
    """Lifetime of tokens issued by the demo sign-in."""
    header_timeout_s: float = 15.0
    """A connection that sends no whole request's headers this long after it opens, or
    after its last answer, is closed (``http/deadlines.py``; WebSockets excepted)."""
    allowed_origins: tuple[str, ...] = ()
    """Origins of other sites' pages that may open ``/ws`` (``*``: any); the server's
    own origin and clients that send none (apps) always may."""
    metrics_token: str | None = None
    """Bearer token of ``GET /metrics``; None: admins' tokens (a demo: anyone)."""
    token_audience: str | None = None
    """When set, a token's ``aud`` must name it (a string, or a list holding it)."""
    token_issuer: str | None = None
    """When set, a token's ``iss`` must be it."""
    order_webhook_url: str | None = None
    """The order system's webhook; None: the in-process sandbox shop takes the orders,
    which needs ``demo`` or ``sandbox_shop`` (buyers pay nothing there)."""
    sandbox_shop: bool = False
    """Take orders in the built-in sandbox shop without ``demo`` (a staging server)."""
    order_webhook_secret: str | None = None
    """``whsec_...``: signs the webhooks and verifies the callbacks. None: derived from
    ``secret`` (only meaningful for the sandbox)."""
    bridge: bool = True
    """Run order-bridge workers in this process (``livecommerce bridge`` runs them apart)."""
    bridge_max_failures: int = 10
    """Failed deliveries of one order before it goes to the dead letters."""
    bridge_timeout_s: float = 10.0
    """Seconds the order system has to answer one delivery."""
    bridge_concurrency: int = 64
    """Deliveries in flight per bridge worker."""
    bridge_claim_idle_s: float = 60.0
    """A delivery untouched this long belongs to a dead worker and is taken over."""
    currency: str = "USD"
    """ISO 4217 code of every price (prices are in its smallest unit)."""
    workers: int = 1
    """Server processes sharing the port (``SO_REUSEPORT``); more than one needs Redis."""
    media_dir: str | None = None
    """Where HLS segments, playlists and clips are written (``{media_dir}/{room}/...``);
    every process of a host should share it. None: a temporary directory of this
    process, deleted when it stops."""
    media_retention_s: int = 7 * 86400
    """Clips and the segments of ended streams are deleted after this long."""
    media_max_viewers: int = 200
    """WebRTC viewers one process serves; past it, viewers are told to use HLS."""
    ice_allow_private: bool = False
    """Check WebRTC peers' candidates on loopback, private and link-local addresses too
    (a LAN deployment; ``demo`` implies it). Off: only public addresses get STUN."""
    analytics: bool = True
    """Count views, unique viewers, watch time, product clicks and the minute series
    (off: only the figures the order and promotion scripts count anyway)."""
    retention: Retention = field(default_factory=Retention)
    retention_interval_s: float = 3600
    """How often the retention sweeper runs."""
    limits: Limits = field(default_factory=Limits)

    @property
    def ice_private(self) -> bool:
        """Whether peers' private addresses are checked (``ice_allow_private`` or demo)."""
        return self.ice_allow_private or self.demo

    @property
    def redis_cluster(self) -> bool:
        """Whether ``redis_url`` names a Redis Cluster."""
        return self.redis_url is not None and self.redis_url.startswith(REDIS_CLUSTER_SCHEMES)

    def check(self) -> Settings:
        """Return self if the settings can run, else raise :class:`ConfigError`."""
        if not self.secret and not self.demo:
            raise ConfigError(
                "no secret: pass --secret or set LIVECOMMERCE_SECRET "
                "(or use --demo to run with a throwaway secret and demo sign-in)"
            )
        if self.secret is not None and len(self.secret.encode()) < 32:
            raise ConfigError("the secret must be at least 32 bytes long (RFC 7518, HS256)")
        if not 1 <= self.tick_ms <= 5000:
            raise ConfigError("tick_ms must be between 1 and 5000")
        if not 1 <= self.tick_max_ms <= 5000:  # below tick_ms: the tick never grows
            raise ConfigError("tick_max_ms must be between 1 and 5000")
        if not 0.01 <= self.fanout_share <= 1:
            raise ConfigError("fanout_share must be between 0.01 and 1")
        if not (self.stall_s == 0 or 0.2 <= self.stall_s <= 3600):
            raise ConfigError("stall_s must be 0 (off) or between 0.2 and 3600 seconds")
        if not 0.1 <= self.header_timeout_s <= 3600:
            raise ConfigError("header_timeout_s must be between 0.1 and 3600 seconds")
        if not 1 <= self.hold_s <= 86400:
            raise ConfigError("hold_s must be between 1 and 86400 seconds")
        if self.history_size < 1:
            raise ConfigError("history_size must be at least 1")
        if self.order_webhook_url is not None and not self.order_webhook_url.startswith(
            ("http://", "https://")
        ):
            raise ConfigError("the order webhook URL must be http:// or https://")
        if self.order_webhook_url is None and not (self.demo or self.sandbox_shop):
            raise ConfigError(
                "no order system: pass --order-webhook-url and --order-webhook-secret "
                "(or --sandbox-shop to take orders in the built-in sandbox, where buyers "
                "pay nothing: for a staging server only)"
            )
        if self.order_webhook_url is not None and self.sandbox_shop:
            raise ConfigError("--sandbox-shop and --order-webhook-url exclude each other")
        if self.order_webhook_url is not None and not self.order_webhook_secret:
            raise ConfigError("an order webhook URL needs --order-webhook-secret (whsec_...)")
        if self.order_webhook_secret is not None:
            from livecommerce.orders.webhooks import parse_secret

            parse_secret(self.order_webhook_secret)
        if self.bridge_max_failures < 1 or self.bridge_concurrency < 1:
            raise ConfigError("bridge_max_failures and bridge_concurrency must be at least 1")
        if not (0 < self.bridge_timeout_s <= 300 and 0 < self.bridge_claim_idle_s <= 86400):
            raise ConfigError("bridge timeouts must be positive (timeout at most 300 s)")
        if len(self.currency) != 3 or not self.currency.isalpha() or not self.currency.isupper():
            raise ConfigError("currency must be an ISO 4217 code such as USD")
        if not 1 <= self.workers <= 64:
            raise ConfigError("workers must be between 1 and 64")
        if self.redis_cluster:
            url = urlsplit(str(self.redis_url))
            if not url.hostname:
                raise ConfigError("a Redis Cluster URL names a node: redis+cluster://host:port")
            if url.path.strip("/") not in ("", "0"):
                raise ConfigError("Redis Cluster has only database 0: drop the /<db> of the URL")
        if self.media_retention_s < 60:
            raise ConfigError("media retention must be at least a minute")
        if self.media_max_viewers < 0:
            raise ConfigError("media_max_viewers must not be negative")
        if self.workers > 1 and not self.redis_url:
            raise ConfigError("several workers share rooms through Redis: pass --redis-url")
        if self.workers > 1 and self.port == 0:
            raise ConfigError("several workers need a fixed port to share (not 0)")
        return self
