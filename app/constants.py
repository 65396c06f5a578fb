"""Column names, table names and fixed values, in one place (spec 000's field names)."""

# ---------------------------------------------------------------- raw input columns (spec 000)
DID = "did"
GENDER_RAW = "gender_new_dev"
AGE_RAW = "forecast_age_dev"
ADV_ID = "adv_id"
ADV_TYPE = "adv_type"
SLOT_ID = "slot_id"
SPREAD_APP_ID = "spread_app_id"
DEVICE_NAME = "device_name"
NET_TYPE = "net_type"
ADV_BILL_MODE_CD = "adv_bill_mode_cd"
SHOW_TIME = "show_time"
CLICK_TIME = "click_time"
KEYWORD = "keyword"
MEDIA_CATEGORY = "media_category"

PERSONA_COLUMNS = [DID, GENDER_RAW, AGE_RAW]
LOG_COMMON_COLUMNS = [
    DID,
    ADV_ID,
    ADV_TYPE,
    SLOT_ID,
    SPREAD_APP_ID,
    DEVICE_NAME,
    NET_TYPE,
    ADV_BILL_MODE_CD,
]
SHOWLOG_COLUMNS = [*LOG_COMMON_COLUMNS, SHOW_TIME]
CLICKLOG_COLUMNS = [*LOG_COMMON_COLUMNS, CLICK_TIME]
KEYWORD_TABLE_COLUMNS = [SPREAD_APP_ID, KEYWORD]
SLOT_TABLE_COLUMNS = [SLOT_ID, MEDIA_CATEGORY]

# ---------------------------------------------------------------- cleaned / derived columns
GENDER = "gender"
AGE = "age"
KEYWORD_INDEX = "keyword_index"
IMPRESSIONS = "impressions"
MEDIA = "media"  # cleaned name of adv_type
PRICE_MODEL = "price_model"  # cleaned name of adv_bill_mode_cd
ACTION_TIME = "action_time"
DAY = "day"
DID_BUCKET = "did_bucket"
IS_CLICK = "is_click"
ACTION_TIME_SECONDS = "action_time_seconds"
INTERVAL_STARTING_TIME = "interval_starting_time"
REASON = "reason"  # quarantine column

# cleaned show/click log (spec 000's cleaned-log columns + partitions)
CLEAN_LOG_COLUMNS = [
    SPREAD_APP_ID,
    DID,
    ADV_ID,
    MEDIA,
    SLOT_ID,
    DEVICE_NAME,
    NET_TYPE,
    PRICE_MODEL,
    ACTION_TIME,
    MEDIA_CATEGORY,
    GENDER,
    AGE,
    KEYWORD,
    KEYWORD_INDEX,
    DAY,
    DID_BUCKET,
]

# train-ready (one row per user; nested arrays aligned element by element, newest first)
DID_INDEX = "did_index"
KWI = "kwi"
KWI_SHOW_COUNTS = "kwi_show_counts"
KWI_CLICK_COUNTS = "kwi_click_counts"
TRAINREADY_COLUMNS = [
    AGE,
    GENDER,
    DID,
    DID_INDEX,
    INTERVAL_STARTING_TIME,
    KWI,
    KWI_SHOW_COUNTS,
    KWI_CLICK_COUNTS,
    DID_BUCKET,
]

# ---------------------------------------------------------------- table names (under <root>/)
RAW_PERSONA = "raw/persona"
RAW_SHOWLOG = "raw/showlog"
RAW_CLICKLOG = "raw/clicklog"
RAW_KEYWORD = "raw/keyword"
RAW_SLOT = "raw/slot"
RAW_TRUTH = "raw/truth"
T_KEYWORDS = "tables/keywords"
T_PERSONA = "tables/persona"
T_SHOWLOG = "tables/showlog"
T_CLICKLOG = "tables/clicklog"
T_LOGS = "tables/logs"
T_TRAINREADY = "tables/trainready"
T_QUARANTINE = "tables/quarantine"
REPORTS = "reports"

PADDING_INDEX = 0  # keyword index 0 is reserved for padding in every array
TIME_FORMAT = "%Y-%m-%d %H:%M:%S"
