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

DEFAULT_TABLE = "recommendations"
DEFAULT_TOP_N = 10
