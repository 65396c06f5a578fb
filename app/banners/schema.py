"""Column and table names of the banner-clustering stage, in one place (spec 002's terms)."""

BANNER_ID = "banner_id"  # the banner meta store's hash-based id: the dedup key across days
DAY = "day"
ADVERTISER = "advertiser"
EMBEDDING = "embedding"
FINGERPRINT = "fingerprint"  # 64-bit hash of an embedding's float32 bytes
BUCKET = "bucket"
ROWS = "rows"  # raw rows of a banner across days
VECTORS = "vectors"  # distinct embeddings of a banner (more than 1 = a conflict)
CLUSTER_ID = "cluster_id"
DISTANCE = "distance"
REASON = "reason"

DID = "did"
EVENT = "event"
LEVELS = ("request", "impression", "click")  # spec 002: req / imp / click level mapping
LEVEL_PREFIX = {"request": "req", "impression": "imp", "click": "clk"}
TRUE_CLUSTER = "true_cluster"

RAW_BANNERS = "raw/banners"
RAW_EVENTS = "raw/banner_events"
RAW_TRUTH = "raw/banner_truth"
RAW_USERS = "raw/banner_users"
T_BANNERS = "tables/banners"
T_QUARANTINE = "tables/quarantine/banners"
T_PREDICTIONS = "tables/banner_clusters"  # /<model version>/
T_USER_FEATURES = "tables/banner_user_features"
REPORTS = "reports"
MODEL_NAME = "banner_clusters"

# quarantine reasons
MISSING_ID = "missing_banner_id"
MISSING_DAY = "missing_day"
WRONG_DIMENSION = "wrong_dimension"
NOT_FINITE = "non_finite_value"


def feature_column(level: str, cluster: int) -> str:
    """``req_c3``: the user's request-level count of cluster 3."""
    return f"{LEVEL_PREFIX[level]}_c{cluster}"
