"""The work between sessions of the three seed programs, by program title.

Written for Holdspace, in plain words: no item, band or task is taken from a published
scale or book. Each says what it is based on. The bands describe where someone is this
week and what might help; none names a condition (domain/plans.py refuses that).
"""

from __future__ import annotations

from typing import Any


def words(en: str, zh: str) -> dict[str, str]:
    return {"en": en, "zh": zh}


OFTEN = [
    {"value": 0, "label": words("Not at all", "完全没有")},
    {"value": 1, "label": words("Some days", "有几天")},
    {"value": 2, "label": words("Most days", "大多数日子")},
    {"value": 3, "label": words("Every day", "每天")},
]


def item(item_id: str, en: str, zh: str, safety_at: int | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"id": item_id, "text": words(en, zh), "choices": OFTEN}
    if safety_at is not None:
        out["safety_at"] = safety_at
    return out


# Asked of every program with safety questions at intake: any answer but "not at all"
# goes to a coordinator at once, and the participant sees the crisis lines.
HARM = item(
    "harm",
    "I had thoughts of harming myself or of not wanting to live",
    "我有过伤害自己或不想活下去的念头",
    safety_at=1,
)


def bands(top: int) -> list[dict[str, Any]]:
    third = top // 3
    return [
        {"up_to": third, "label": words("A steadier stretch", "比较平稳的一段时间")},
        {
            "up_to": 2 * third,
            "label": words("Some strain: keep to your plan", "有些吃力：照着你的计划走"),
        },
        {
            "up_to": top,
            "label": words(
                "A heavy stretch: consider telling your facilitator",
                "比较沉重的一段时间：可以考虑告诉你的带领者",
            ),
        },
    ]


def questionnaire(
    qid: str, title: dict[str, str], based_on: str, items: list[dict], when: list[str]
) -> dict[str, Any]:
    return {
        "id": qid,
        "title": title,
        "based_on": based_on,
        "items": items,
        "bands": bands(3 * len(items)),
        "when": when,
    }


RECOVERY_ITEMS = [
    item("urges", "Urges took up much of my attention", "冲动占据了我很多注意力"),
    item("acted", "I acted in ways I had decided to stop", "我做了自己决定停下来的事"),
    item("hiding", "I kept things hidden from people close to me", "我对亲近的人隐瞒了一些事"),
    item("alone", "I felt cut off from other people", "我觉得和别人隔绝了"),
    item("rest", "I slept or ate badly", "我睡不好或吃不好"),
    HARM,
]

RECOVERY_PLAN: dict[str, Any] = {
    "based_on": (
        "Written for Holdspace from the group's own page (a self-screening and progress "
        "tool, reading and journaling between sessions, further steps for recovery); "
        "the items are plain-language questions of our own, not a published scale."
    ),
    "questionnaires": [
        questionnaire(
            "self-screening",
            words("Where I am: self-screening", "我现在在哪里：自我检视"),
            "Written for Holdspace; six plain-language questions about the last two weeks. "
            "It routes, it does not diagnose. CC BY 4.0.",
            RECOVERY_ITEMS,
            ["first_session", "last_session"],
        ),
        questionnaire(
            "weekly",
            words("Weekly check-in", "每周小结"),
            "Written for Holdspace: the self-screening's questions, asked of the last week. "
            "CC BY 4.0.",
            RECOVERY_ITEMS,
            ["weekly"],
        ),
    ],
    "homework": [
        {
            "session": 1,
            "text": words(
                "Write one page: what brought you to the group, in your own words.",
                "写一页：用你自己的话，写下是什么让你来到这个小组。",
            ),
        },
        {
            "session": 2,
            "text": words(
                "Notice three moments this week when an urge came, and what came just before.",
                "留意这周冲动出现的三个时刻，以及它们出现之前发生了什么。",
            ),
        },
        {
            "session": 3,
            "text": words(
                "List the people you could call on a hard evening; call one of them.",
                "列出在难熬的晚上你可以打电话的人；给其中一位打个电话。",
            ),
        },
        {
            "session": 4,
            "text": words(
                "Write a letter you will not send to someone your behaviour has hurt.",
                "给一位被你的行为伤害过的人写一封不寄出的信。",
            ),
        },
        {
            "session": 5,
            "text": words(
                "Draft your plan for the weeks after the group: what helps, who helps.",
                "起草小组结束后几周的计划：什么对你有帮助，谁能帮你。",
            ),
        },
    ],
    "milestones": [
        {"id": "came", "title": words("Came to the first session", "参加了第一次聚会")},
        {"id": "spoke", "title": words("Spoke in the group", "在小组里开口说话")},
        {
            "id": "called",
            "title": words("Called someone on a hard day", "在难熬的一天给人打了电话"),
        },
        {"id": "honest", "title": words("Told one person the truth", "对一个人说了实话")},
        {"id": "plan", "title": words("Wrote my plan for after the group", "写下了小组之后的计划")},
    ],
}

FACILITATOR_ITEMS = [
    item("carry", "I carried my group members' stories home with me", "我把组员的故事带回了家"),
    item("tired", "I felt drained after holding a group", "带完小组后我觉得被掏空"),
    item("alone", "I had nobody to talk to about my groups", "关于我的小组，我没有人可以倾诉"),
    item("rest", "I slept badly or could not switch off", "我睡不好，或者停不下来"),
]

FACILITATOR_PLAN: dict[str, Any] = {
    "based_on": (
        "Written for Holdspace from the session's purpose (facilitators processing their "
        "own experience of holding groups); not a burnout inventory."
    ),
    "questionnaires": [
        questionnaire(
            "carrying",
            words("What I carry from my groups", "我从小组里带走了什么"),
            "Written for Holdspace; four plain-language questions about the last month. CC BY 4.0.",
            FACILITATOR_ITEMS,
            ["sign_up", "last_session"],
        )
    ],
    "homework": [
        {
            "session": 1,
            "text": words(
                "Write down one thing from the session you want to keep for your next group.",
                "写下这次交流会中你想带到下一次小组里的一件事。",
            ),
        },
    ],
    "milestones": [
        {"id": "named", "title": words("Named what I carry", "说出了我背负的东西")},
        {"id": "support", "title": words("Set up my own support", "为自己安排了支持")},
        {
            "id": "rest",
            "title": words("Took a real break between groups", "在两个小组之间真正休息了一次"),
        },
    ],
}

# The centre's article describes psycho-education following a tasks-based model, with
# accountability, shared progress, milestones, homework and feedback. The milestones
# follow that idea as a path of steps; their titles are ours, not the model's tasks.
CENTRE_STEPS = [
    ("honest-count", "Counted honestly what it has cost me", "诚实地算清了它让我付出了什么"),
    ("stopped-one", "Stopped one behaviour for a week", "停下了一种行为，坚持了一周"),
    ("safety-plan", "Wrote a plan for risky moments", "写下了应对高风险时刻的计划"),
    ("told-one", "Told one trusted person", "告诉了一位信任的人"),
    ("partner", "Chose an accountability partner", "选定了一位互相督促的伙伴"),
    ("feelings", "Named the feelings that come before", "说出了冲动之前出现的情绪"),
    ("history", "Wrote my story so far", "写下了我到目前为止的故事"),
    ("amends", "Thought about who was hurt and what I owe", "想清了谁受到了伤害、我欠他们什么"),
    ("routine", "Kept a daily routine for two weeks", "保持日常作息两周"),
    ("next", "Planned my next steps after the group", "规划了小组结束后的下一步"),
]

CENTRE_PLAN: dict[str, Any] = {
    "based_on": (
        "Written for Holdspace from the centre's description of its group (psycho-education "
        "following a tasks-based model, accountability, sharing progress, milestones, "
        "homework, feedback); the steps and readings are in our own words."
    ),
    "questionnaires": [
        questionnaire(
            "weekly",
            words("Weekly check-in", "每周小结"),
            "Written for Holdspace: plain-language questions about the last week. CC BY 4.0.",
            RECOVERY_ITEMS,
            ["weekly"],
        )
    ],
    "homework": [
        {"session": s, "text": words(en, zh)}
        for s, (en, zh) in enumerate(
            [
                (
                    "Read the session's handout; mark one sentence that is true for you.",
                    "阅读本次讲义，划出一句对你来说是真实的话。",
                ),
                (
                    "Write what it has cost you: time, money, people, health.",
                    "写下它让你付出的代价：时间、金钱、人际、健康。",
                ),
                (
                    "Write your plan for risky moments: where, when, what you will do instead.",
                    "写下应对高风险时刻的计划：在哪里、什么时候、你会改做什么。",
                ),
                (
                    "Check in with your accountability partner twice this week.",
                    "这周和你的督促伙伴联系两次。",
                ),
                (
                    "Keep a feelings log: each evening, one feeling and what came with it.",
                    "记情绪日志：每晚写下一种情绪以及它带来了什么。",
                ),
                (
                    "Write the first part of your story, up to when it began.",
                    "写下你故事的第一部分，写到它开始的时候。",
                ),
                ("Write the rest of your story, up to today.", "写下你故事的其余部分，直到今天。"),
                (
                    "List who was hurt, and one thing you could do for each.",
                    "列出受到伤害的人，以及你能为每个人做的一件事。",
                ),
                (
                    "Write your plan for the three months after the group.",
                    "写下小组结束后三个月的计划。",
                ),
            ],
            start=1,
        )
    ],
    "milestones": [{"id": i, "title": words(en, zh)} for i, en, zh in CENTRE_STEPS],
}

# registration's seed titles (each program's title in its own language).
PLANS: dict[str, dict[str, Any]] = {
    "Six-week online recovery group": RECOVERY_PLAN,
    "Facilitators' processing session": FACILITATOR_PLAN,
    "咨询中心康复小组": CENTRE_PLAN,
}
