"""Seed the consent forms of the three source programs, in English and Simplified Chinese.

    python -m consent.seed --url http://127.0.0.1:8002

The refs are the ``consent_form_ref`` values of registration's seed
("recovery-group-consent", "facilitator-session-consent", "counselling-group-consent"),
so registration.approved for those programs finds its form. Talks to a running consent
service through its coordinator API (minting a coordinator token from JWT_SECRET); running it again
adds nothing that is already there.
"""

from __future__ import annotations

from typing import Any

import httpx
import typer

from shared.seeding import lead_client, ok

CRISIS_EN = """\
## Crisis resources {#crisis-resources}

If you are in danger now, call **120** (medical emergency) or **110** (police).

- National psychological assistance hotline: **12356**
- Hope 24 hotline (希望24热线): **400-161-9995**
- Beijing Psychological Crisis Research and Intervention Center: **010-82951332**
"""

CRISIS_ZH = """\
## 危机求助资源 {#crisis-resources}

如果你现在有危险，请拨打 **120**（急救）或 **110**（报警）。

- 全国心理援助热线：**12356**
- 希望24热线：**400-161-9995**
- 北京心理危机研究与干预中心：**010-82951332**
"""

RECOVERY_EN: dict[str, Any] = {
    "ref": "recovery-group-consent",
    "language": "en",
    "title": "Six-week online recovery group: participation agreement",
    "body_markdown": f"""\
This is a closed peer-support group of at most eight adults that meets online once a week
for six weeks with a trained facilitator. Please read this agreement. To take part you
acknowledge each clause below and sign by typing your name or the alias you use in the group.

## Group rules

- Join every session on time, from a private place where no one else can see or hear the group.
- Speak from your own experience; listen without interrupting; give no advice unless asked.
- Do not record, photograph or screenshot the group, and take no notes that identify anyone.
- Do not come to a session under the influence of alcohol or drugs.
- Tell the facilitator if you cannot come or decide to leave the group.

## Confidentiality

Everything said in the group, and who is in it, stays in the group, during the six weeks and
after. You may talk about your own experience with anyone, but never about another member's.

## The facilitator is not your therapist

The facilitator guides the group; the relationship with the facilitator is not a therapy or
counselling relationship, and the group is not a substitute for treatment by a clinician.

## Your safety

Holdspace, the organisers and the facilitator are not responsible for members' safety. If you
have thoughts of harming yourself or ending your life, please seek clinical treatment (a
psychiatrist, a hospital, or a counsellor) and use the [crisis resources](#crisis-resources)
below; the group cannot give you that help.

## Fee

The fee is 900 RMB. It is **not refunded** once paid, including if you withdraw.

## Withdrawing consent

You may withdraw this consent at any time with the withdrawal link you receive after signing;
your place in the group then ends.

{CRISIS_EN}""",
    "clauses": [
        {"id": "group_rules", "text": "I have read the group rules and will follow them."},
        {
            "id": "confidentiality",
            "text": "I will keep everything said in the group, and who is in it, confidential, "
            "during the group and after it.",
        },
        {
            "id": "not_therapy",
            "text": "I understand that the facilitator relationship is not a therapy relationship "
            "and that the group is not a substitute for treatment.",
        },
        {
            "id": "own_safety",
            "text": "I understand that the organisers are not responsible for my safety, and that "
            "if I have thoughts of self-harm or suicide I should seek clinical treatment and "
            "use the crisis resources.",
        },
        {
            "id": "no_refund",
            "text": "I understand that the fee of 900 RMB is not refunded once paid.",
        },
    ],
}

RECOVERY_ZH: dict[str, Any] = {
    "ref": "recovery-group-consent",
    "language": "zh",
    "title": "六周线上康复小组：参与协议",
    "body_markdown": f"""\
这是一个封闭的同伴支持小组，最多八位成年人，由受过训练的带领者带领，每周线上聚会一次，共六周。
请阅读本协议。参加小组需要确认下面每一条，并输入你的姓名或你在小组中使用的化名作为签名。

## 小组规则

- 每次准时参加，所在的地方要私密，不让别人看到或听到小组内容。
- 只分享自己的经历；倾听，不打断；除非对方请求，不给建议。
- 不录音、不录像、不截屏，不做能识别任何人的笔记。
- 不在饮酒或使用药物后参加小组。
- 如果不能参加或决定离开，请告诉带领者。

## 保密

小组中说的一切，以及谁在小组中，都只留在小组里，在六周内和结束后都是如此。
你可以和任何人谈你自己的经历，但不谈其他成员的。

## 带领者不是你的治疗师

带领者负责带领小组；你和带领者之间不是治疗或咨询关系，小组也不能替代临床治疗。

## 你的安全

Holdspace、组织者和带领者不对成员的安全负责。如果你有伤害自己或结束生命的想法，
请寻求临床治疗（精神科医生、医院或心理咨询师），并使用下面的[危机求助资源](#crisis-resources)；
小组无法提供这样的帮助。

## 费用

费用为 900 元，付款后**不予退还**，包括你中途退出的情况。

## 撤回同意

签署后你会收到撤回链接，可以随时撤回本同意；撤回后你在小组中的名额随之结束。

{CRISIS_ZH}""",
    "clauses": [
        {"id": "group_rules", "text": "我已阅读小组规则，并会遵守。"},
        {
            "id": "confidentiality",
            "text": "我会对小组中说的一切以及小组成员的身份保密，在小组期间和结束后都是如此。",
        },
        {"id": "not_therapy", "text": "我明白与带领者的关系不是治疗关系，小组不能替代治疗。"},
        {
            "id": "own_safety",
            "text": "我明白组织者不对我的安全负责；"
            "如果我有自伤或自杀的想法，我应寻求临床治疗并使用危机求助资源。",
        },
        {"id": "no_refund", "text": "我明白 900 元费用付款后不予退还。"},
    ],
}

FACILITATORS_EN: dict[str, Any] = {
    "ref": "facilitator-session-consent",
    "language": "en",
    "title": "Facilitators' processing session: participation agreement",
    "body_markdown": f"""\
A session for facilitators to process their own experience of holding groups. It is a peer
space, not supervision of your clients and not therapy.

## Confidentiality

What colleagues share stays in the session. Do not name or describe your group members in a
way that could identify them.

## Not therapy, not supervision

The session's facilitator is not your therapist or clinical supervisor.

## Your safety

The organisers are not responsible for participants' safety. If you have thoughts of harming
yourself or ending your life, please seek clinical treatment and use the
[crisis resources](#crisis-resources) below.

## Fee

The fee is 150 RMB (scholarships can be requested). It is **not refunded** once paid.

{CRISIS_EN}""",
    "clauses": [
        {
            "id": "confidentiality",
            "text": "I will keep what colleagues share confidential and will not identify my "
            "group members.",
        },
        {
            "id": "not_therapy",
            "text": "I understand the session is not therapy and not clinical supervision.",
        },
        {
            "id": "own_safety",
            "text": "I understand that the organisers are not responsible for my safety and that "
            "I should seek clinical treatment if I have thoughts of self-harm or suicide.",
        },
        {"id": "no_refund", "text": "I understand that the fee is not refunded once paid."},
    ],
}

FACILITATORS_ZH: dict[str, Any] = {
    "ref": "facilitator-session-consent",
    "language": "zh",
    "title": "带领者交流会：参与协议",
    "body_markdown": f"""\
这是带领者们处理自己带领小组经历的聚会。它是同伴空间，不是对你的来访者的督导，也不是治疗。

## 保密

同事分享的内容只留在聚会中。不要以可能识别出他们的方式提及或描述你的小组成员。

## 不是治疗，也不是督导

本次聚会的带领者不是你的治疗师或临床督导。

## 你的安全

组织者不对参与者的安全负责。如果你有伤害自己或结束生命的想法，请寻求临床治疗，
并使用下面的[危机求助资源](#crisis-resources)。

## 费用

费用为 150 元（可申请奖学金），付款后**不予退还**。

{CRISIS_ZH}""",
    "clauses": [
        {
            "id": "confidentiality",
            "text": "我会对同事分享的内容保密，不会透露可识别我的小组成员的信息。",
        },
        {"id": "not_therapy", "text": "我明白本次聚会不是治疗，也不是临床督导。"},
        {
            "id": "own_safety",
            "text": "我明白组织者不对我的安全负责；如果我有自伤或自杀的想法，我应寻求临床治疗。",
        },
        {"id": "no_refund", "text": "我明白费用付款后不予退还。"},
    ],
}

COUNSELLING_ZH: dict[str, Any] = {
    "ref": "counselling-group-consent",
    "language": "zh",
    "title": "咨询中心康复小组：参与协议",
    "body_markdown": f"""\
这是由中心咨询师带领、最多八位成年人参加的十周小组：学习康复的知识，课后做练习，彼此督促。
它是同伴支持，不是个体治疗。

## 小组守则

- 准时参加，在没有旁人能看到或听到的地方参加。
- 从自己的经历出发发言；不打断别人；别人没有请求时不给建议。
- 不录音、不拍照、不截图。

## 保密

小组中分享的内容只留在小组中。你在课间记录的内容只属于你自己；只有你选择分享的部分，带领者或你邀请的组员才能看到。

## 你的安全

组织者不对参与者的安全负责。如果你有伤害自己或结束生命的想法，请寻求临床治疗，
并使用下面的[危机求助资源](#crisis-resources)。

## 费用

费用为 1200 元，付款后**不予退还**。

{CRISIS_ZH}""",
    "clauses": [
        {"id": "group_rules", "text": "我会遵守小组守则。"},
        {"id": "confidentiality", "text": "我会对小组中分享的内容保密。"},
        {
            "id": "own_safety",
            "text": "我明白组织者不对我的安全负责；如果我有自伤或自杀的想法，我应寻求临床治疗。",
        },
        {"id": "no_refund", "text": "我明白 1200 元费用付款后不予退还。"},
    ],
}

COUNSELLING_EN: dict[str, Any] = {
    "ref": "counselling-group-consent",
    "language": "en",
    "title": "Counselling centre recovery group: participation agreement",
    "body_markdown": f"""\
A ten-week group of at most eight adults led by a counsellor of the centre: psycho-education
on recovery, homework between sessions and accountability with one another. It is peer
support, not individual therapy.

## Group rules

- Join on time, from a place where no one else can see or hear the group.
- Speak from your own experience; listen without interrupting; give no advice unless asked.
- Do not record, photograph or screenshot the group.

## Confidentiality

What members share stays in the group. What you write between sessions is yours: the
facilitator, or a member you invite, sees only what you choose to share.

## Your safety

The organisers are not responsible for participants' safety. If you have thoughts of harming
yourself or ending your life, please seek clinical treatment and use the
[crisis resources](#crisis-resources) below.

## Fee

The fee is 1200 RMB. It is **not refunded** once paid.

{CRISIS_EN}""",
    "clauses": [
        {"id": "group_rules", "text": "I will keep the group rules."},
        {"id": "confidentiality", "text": "I will keep what members share confidential."},
        {
            "id": "own_safety",
            "text": "I understand that the organisers are not responsible for my safety and that "
            "I should seek clinical treatment if I have thoughts of self-harm or suicide.",
        },
        {
            "id": "no_refund",
            "text": "I understand that the fee of 1200 RMB is not refunded once paid.",
        },
    ],
}

FORMS = (
    RECOVERY_EN,
    RECOVERY_ZH,
    FACILITATORS_EN,
    FACILITATORS_ZH,
    COUNSELLING_ZH,
    COUNSELLING_EN,
)


def seed(client: httpx.Client) -> list[str]:
    """Create and publish each form that is not there yet; returns the form ids created."""
    existing = {f["form_id"]: f for f in ok(client.get("/forms")).json()}
    created = []
    for spec in FORMS:
        form_id = f"{spec['ref']}.{spec['language']}"
        if form_id in existing:
            if not existing[form_id]["current_version"]:
                ok(client.post(f"/forms/{form_id}/publish"))
            continue
        ok(client.post("/forms", json={**spec, "publish": True}))
        created.append(form_id)
    return created


def main(url: str = typer.Option("http://127.0.0.1:8002", help="consent service base URL")) -> None:
    with lead_client(url) as client:
        created = seed(client)
    names = ", ".join(created) or "all present already"
    typer.echo(f"seeded {len(created)} consent forms ({names})")


if __name__ == "__main__":
    typer.run(main)
