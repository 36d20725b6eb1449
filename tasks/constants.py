"""Names shared by the data, score and serve code: one place to change them."""

# Canonical ratings schema (tasks.data writes these columns to every snapshot).
USER_ID = "user_id"
ITEM_ID = "item_id"
RATING = "rating"
TIMESTAMP = "timestamp"
RATING_COLUMNS = (USER_ID, ITEM_ID, RATING, TIMESTAMP)

# Item catalogue.
TITLE = "title"
GENRES = "genres"

# Snapshot layout: datasets/ds=YYYY-MM-DD/<file>.
RATINGS_FILE = "ratings.parquet"
ITEMS_FILE = "items.parquet"
MANIFEST_FILE = "_manifest.json"

# Model layout: models/<model_version>/<file>.
WEIGHTS_FILE = "model.pt"
META_FILE = "meta.json"
METRICS_FILE = "metrics.json"
SEEN_FILE = "seen.npz"
REPORT_FILE = "report.html"
# Written last, listing every file with its size and SHA-256: a version without it
# (or whose files do not match it) is incomplete and never loaded.
ARTIFACT_MANIFEST = "_complete.json"
LIVE_POINTER = "models/_live.json"

# DynamoDB attributes (partition key user_id, sort key model_version).
ATTR_USER = "user_id"
ATTR_VERSION = "model_version"
ATTR_ITEMS = "items"
ATTR_GENERATED_AT = "generated_at"
ATTR_EXPIRES_AT = "expires_at"
ATTR_USERS = "users"
ATTR_TOP_N = "top_n"
# Reserved partition keys: they cannot collide with real users because user
# ids are validated to not start with "__".
MARKER_USER = "__complete__"
FALLBACK_USER = "__popular__"

# The one rule for a user id, checked by the snapshot (tasks.data) and by the serving API's path
# parameter (and published in its OpenAPI schema): an id the snapshot accepts is one the API can
# answer. 1-64 characters; not "__..." (reserved rows), not "." or ".." (URL dot segments); no
# "/" (a path separator, even percent-encoded), no control characters and no Unicode spaces. The
# class is written out, not as \s, so Python's re and ECMA-262 (OpenAPI's dialect) read it alike:
# their \s differ (U+0085, U+001C-U+001F, U+FEFF).
MAX_ID_LENGTH = 64
ID_FORBIDDEN_CHARS = r"\x00-\x20\x7f-\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000\ufeff/"
_C = f"[^{ID_FORBIDDEN_CHARS}]"
# No look-arounds (pydantic's Rust regex has none): the alternatives spell out "not __..., . or ..".
USER_ID_PATTERN = (rf"^(?:[^{ID_FORBIDDEN_CHARS}_.]{_C}{{0,63}}|_(?:[^{ID_FORBIDDEN_CHARS}_]{_C}{{0,62}})?"
                   rf"|\.[^{ID_FORBIDDEN_CHARS}.]{_C}{{0,62}}|\.\.{_C}{{1,62}})$")
USER_ID_RULE = ("1-64 characters, no whitespace, control characters or '/', "
                "not starting with '__' (reserved), not '.' or '..'")

DEFAULT_TABLE = "recommendations"
DEFAULT_TOP_N = 10
