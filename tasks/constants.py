"""The ratings schema and the id rule, shared by the data, score and serve code.

Where things live (S3 keys, file names, the table's schema, defaults) and the records that cross
the argv boundary are :mod:`tasks.layout`'s, the contract the Airflow side reads too: import them
from there.
"""

# Canonical ratings schema (tasks.data writes these columns to every snapshot).
USER_ID = "user_id"
ITEM_ID = "item_id"
RATING = "rating"
TIMESTAMP = "timestamp"
RATING_COLUMNS = (USER_ID, ITEM_ID, RATING, TIMESTAMP)

# Item catalogue.
TITLE = "title"
GENRES = "genres"


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

# Item ids follow the same rule (one rule for every id that reaches a DynamoDB row or a URL).
ID_PATTERN = USER_ID_PATTERN

# Timestamps are Unix seconds (UTC), integers, from 0 (1970-01-01) to the end of the run date;
# without a run date (tasks.train reading a raw file) up to 9999-12-31T23:59:59 (the last
# second a datetime can show).
MIN_TIMESTAMP = 0
MAX_TIMESTAMP = 253_402_300_799

# DynamoDB's item limit is 400 KB (attribute names + values, UTF-8). The longest row is a user's
# list (or the popularity row) at MAX_TOP_N items: per item a title of at most MAX_TITLE_LENGTH
# characters (JSON-escaped: <= 6 bytes each for a control character, 4 for other non-ASCII), an
# id of <= 64 characters (<= 4 bytes each) and a score, so <= 100 x (1,800 + 256 + 40) B ~ 210 KB:
# half the limit, whatever the text. tasks.table checks every row against MAX_ROW_BYTES before
# writing it.
MAX_TITLE_LENGTH = 300
MAX_TOP_N = 100
DYNAMODB_ITEM_LIMIT = 400 * 1024
MAX_ROW_BYTES = 350 * 1024  # the limit less a margin for attribute names and future attributes
