"""Every string the portal shows, in Chinese and English (one table), and the label helpers.

The language is the `lang` cookie (set by /lang/zh or /lang/en); Chinese by default.
Templates call `t("key")`; a key missing from the table shows as the key itself, and a test
checks that every key the templates use is here.
"""

from __future__ import annotations

from collections.abc import Callable

from indicators.catalog import INDICATORS
from indicators.vocabulary import NO_TIER, SOURCES, STATUSES, TIERS

LANGUAGES = ("zh", "en")
DEFAULT_LANGUAGE = "zh"

STRINGS: dict[str, tuple[str, str]] = {
    "app_title": ("工业局智能工厂评价门户", "Bureau smart-factory evaluation portal"),
    "factories": ("工厂", "Factories"),
    "admin_keys": ("密钥管理", "Keys"),
    "admin_accounts": ("账户", "Accounts"),
    "audit": ("审计记录", "Audit"),
    "logout": ("退出", "Log out"),
    "login": ("登录", "Log in"),
    "username": ("用户名", "Username"),
    "password": ("密码", "Password"),
    "login_failed": ("用户名或密码错误，或账户已停用。", "Wrong username or password, or the "
                     "account is disabled."),
    "signed_in_as": ("当前用户", "Signed in as"),
    "role": ("角色", "Role"),
    "role_evaluator": ("评价员", "evaluator"),
    "role_admin": ("管理员", "admin"),
    "filter": ("筛选", "Filter"),
    "factory_id": ("工厂编号", "Factory"),
    "search": ("搜索", "Search"),
    "all": ("全部", "all"),
    "problems_only": ("仅有问题的", "with problems only"),
    "sort_by": ("排序", "Sort by"),
    "ascending": ("升序", "ascending"),
    "descending": ("降序", "descending"),
    "apply": ("应用", "Apply"),
    "sort_factory": ("工厂编号", "factory"),
    "sort_tier": ("等级", "tier"),
    "sort_last_report": ("最新接收", "latest received"),
    "sort_coverage": ("覆盖率", "coverage"),
    "sort_rejections": ("拒收", "rejections"),
    "sort_gaps": ("缺口", "gaps"),
    "tier_latest": ("等级（最新日报所述）", "Tier (as the latest daily report states)"),
    "tier_reached": ("达到等级", "Tier reached"),
    "last_report": ("最新日报", "Latest daily report"),
    "age": ("接收距今", "Received"),
    "days_ago": ("天前", "days ago"),
    "coverage": ("覆盖率", "Coverage"),
    "coverage_list_note": (
        "有已接受日报的天数 / 当年至昨日（或年末）的天数；无数据日在工厂页面判定。",
        "Days with an accepted daily report / days of the year through yesterday (or Dec "
        "31); days without data are judged on the factory page.",
    ),
    "chain": ("报告链", "Chain"),
    "log": ("透明日志", "Log"),
    "rejections": ("拒收", "Rejections"),
    "gaps": ("缺口", "Gaps"),
    "intact": ("完整", "intact"),
    "pending_link": ("待链接", "pending link"),
    "all_in_log": ("全部在日志中", "all in the log"),
    "not_in_log": ("不在日志中", "not in the log"),
    "none": ("无", "none"),
    "no_reports": ("尚无报告", "no reports yet"),
    "year": ("年度", "Year"),
    "through": ("截至", "Through"),
    "evaluate": ("评价", "Evaluate"),
    "evaluation_failed": ("无法评价", "Cannot evaluate"),
    "conditions": ("评价条件", "Tier conditions"),
    "condition": ("条件", "Condition"),
    "tier": ("等级", "Tier"),
    "measured": ("实测值", "Measured"),
    "threshold": ("阈值", "Threshold"),
    "comparison": ("比较", "Comparison"),
    "result": ("结果", "Result"),
    "source": ("来源", "Source"),
    "reason": ("原因", "Reason"),
    "trends": ("月度趋势", "Monthly trends"),
    "devices": ("设备", "Devices"),
    "device": ("设备", "Device"),
    "line": ("产线", "Line"),
    "process_step": ("工序", "Process step"),
    "networked": ("联网", "Networked"),
    "networked_days": ("联网天数占比", "Networked days"),
    "automated": ("数控/自动化", "CNC / automated"),
    "key_process": ("关键工序", "Key process"),
    "oee": ("设备综合效率", "OEE"),
    "availability": ("可用率", "Availability"),
    "data_collection": ("数据采集率", "Data collection"),
    "devices_note": (
        "按设备汇总所评价年度内计入的已接受日报的基础数据；连接方式和类型取自最新日报的设备清单。",
        "Sums of each device's base measures over the counted accepted daily reports of "
        "the year; connection and kind from the latest daily report's inventory.",
    ),
    "yes": ("是", "yes"),
    "no": ("否", "no"),
    "declared": ("申报条件", "Declared conditions"),
    "no_declarations": ("无申报文件：申报条件均为未申报", "no declarations file: every declared "
                        "condition is not declared"),
    "in_report": ("最新日报所载", "In the latest daily report"),
    "documents": ("证明文件", "Documents"),
    "declarant": ("申报人", "Declarant"),
    "not_declared": ("未申报", "not declared"),
    "not_in_report": ("报告未载明", "not stated in the report"),
    "value": ("申报值", "Declared value"),
    "no_rejections": ("无拒收报告", "No rejected reports"),
    "received_at": ("接收时间", "Received at"),
    "issued_at": ("签发时间", "Issued at"),
    "delay": ("期末后接收", "Received after period end"),
    "seq": ("序号", "Seq"),
    "kind": ("类型", "Kind"),
    "period": ("期间", "Period"),
    "revision": ("修订", "Rev."),
    "state": ("状态", "State"),
    "linked": ("链接", "Linked"),
    "report": ("报告", "Report"),
    "downloads": ("下载", "Downloads"),
    "download_html": ("证据报告 HTML", "Evidence report (HTML)"),
    "download_pdf": ("证据报告 PDF", "Evidence report (PDF)"),
    "download_zip": ("签名证据文件夹 (zip)", "Signed evidence folder (zip)"),
    "verification": ("核验", "Verification"),
    "signature": ("签名（用登记公钥重新核验）", "Signature (verified again with the enrolled key)"),
    "schema": ("格式", "Schema"),
    "chain_link": ("链接至上一报告", "Link to the previous report"),
    "indicators_recomputed": ("指标重算", "Indicators recomputed"),
    "key_id": ("密钥编号", "Key id"),
    "key_status": ("密钥状态", "Key status"),
    "key_window": ("密钥有效期", "Key validity window"),
    "valid_from": ("生效于", "valid from"),
    "until": ("至", "until"),
    "seq_window": ("序号范围", "sequence numbers"),
    "open_ended": ("至今", "open"),
    "payload_sha": ("载荷 SHA-256", "Payload SHA-256"),
    "prev_sha": ("上一报告 SHA-256", "Previous SHA-256"),
    "merkle_root": ("原始数据 Merkle 根", "Raw-data Merkle root"),
    "segments": ("数据段", "segments"),
    "no_raw_data": ("报告无原始数据根", "the report has no raw-data root"),
    "log_inclusion": ("透明日志收录", "Transparency-log inclusion"),
    "leaf_index": ("叶序号", "leaf"),
    "log_head": ("日志签名树头", "signed tree head"),
    "proof_ok": ("收录证明已核验", "inclusion proof verified"),
    "proof_failed": ("收录证明不成立", "inclusion proof does NOT verify"),
    "no_leaf": ("日志中无此报告", "the log has no leaf for this report"),
    "receipt": ("回执", "Receipt"),
    "ok": ("通过", "ok"),
    "failed": ("不通过", "FAILED"),
    "enrol_key": ("登记公钥", "Enrol a key"),
    "jwk": ("公钥 JWK (JSON)", "Public JWK (JSON)"),
    "enrol": ("登记", "Enrol"),
    "revoke": ("吊销", "Revoke"),
    "rotate": ("应用轮换声明", "Apply a rotation statement"),
    "statement": ("轮换声明 (JSON)", "Rotation statement (JSON)"),
    "enrolled_keys": ("已登记密钥", "Enrolled keys"),
    "add_user": ("新增账户", "Add an account"),
    "disable": ("停用", "Disable"),
    "disabled": ("已停用", "disabled"),
    "enabled": ("启用", "enabled"),
    "created_at": ("创建时间", "Created at"),
    "who": ("用户", "Who"),
    "action": ("操作", "Action"),
    "target": ("对象", "Target"),
    "when": ("时间", "When"),
    "done": ("已完成", "Done"),
    "error": ("错误", "Error"),
    "forbidden": ("无权限：仅管理员可执行此操作。", "Forbidden: only admins may do this."),
    "csrf_failed": ("表单已过期或无效，请刷新页面后重试。",
                    "The form expired or is not valid: reload the page and try again."),
    "not_found": ("未找到", "Not found"),
    "insufficient_data": ("数据不足", "insufficient data"),
    "back": ("返回", "Back"),
    "language": ("English", "中文"),
}


def translator(lang: str) -> Callable[[str], str]:
    index = 0 if lang == "zh" else 1

    def t(key: str) -> str:
        pair = STRINGS.get(key)
        return pair[index] if pair else key

    return t


def tier_label(tier: str | None, lang: str) -> str:
    label = TIERS.get(tier or "", NO_TIER)
    return label.zh if lang == "zh" else label.en


def status_label(status: str, lang: str) -> str:
    label = STATUSES.get(status)
    if label is None:
        return status
    return label.zh if lang == "zh" else label.en


def source_label(source: str, lang: str) -> str:
    label = SOURCES.get(source)
    if label is None:
        return source
    return label.zh if lang == "zh" else label.en


def indicator_label(key: str, lang: str) -> str:
    info = INDICATORS.get(key)
    if info is None:
        return key
    return info.label_zh if lang == "zh" else info.label_en
