"""The BBC corpus → topics → a DataFrame → a 2-D map of the articles coloured by topic.

    python examples/bbc_topics.py CORPUS_DIR STORE_DIR OUT.png

CORPUS_DIR holds one folder per topic of .txt articles (BBC News: business, entertainment,
politics, sport, tech). The store is built on the first run (only new or changed articles are
embedded later). Needs: the likewise module (pip install ./python), pandas, matplotlib.
"""

import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # write a file; no display needed
import matplotlib.pyplot as plt
import pandas as pd

import likewise


def main(corpus: str, store_dir: str, out: str) -> None:
    store = likewise.Store(store_dir)
    report = store.index([corpus])["report"]
    print(f"{report['articles_new']} new, {report['articles_unchanged']} unchanged articles", file=sys.stderr)

    # Topics, chosen by silhouette: one row per article with its topic and the topic's keywords.
    topics = store.clusters(by="topic")
    rows = [
        {"key": m["key"], "topic": c["id"], "keywords": ", ".join(c["keywords"][:3]), "centrality": m["score"]}
        for c in topics["clusters"]
        for m in c["members"]
    ]
    articles = store.articles().merge(pd.DataFrame(rows), on="key", how="left")
    articles["topic"] = articles["topic"].astype("Int64")  # outliers: <NA>
    articles["folder"] = articles["key"].map(lambda k: Path(k).parent.name)
    print(pd.crosstab(articles["topic"], articles["folder"]), file=sys.stderr)

    # The map likewise computes for its web page (t-SNE of the article vectors).
    points = pd.DataFrame(store.map()["points"])[["key", "x", "y"]]
    articles = articles.merge(points, on="key")

    fig, ax = plt.subplots(figsize=(8, 7), dpi=110)
    for (topic, keywords), group in articles.groupby(["topic", "keywords"]):
        ax.scatter(group["x"], group["y"], s=6, alpha=0.8, label=f"#{topic}: {keywords} ({len(group)})")
    ax.set_title(f"{len(articles)} BBC articles, {len(topics['clusters'])} topics found by likewise")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.legend(loc="best", fontsize=8, markerscale=3)
    fig.tight_layout()
    fig.savefig(out)
    print(f"wrote {out}", file=sys.stderr)


if __name__ == "__main__":
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    main(*sys.argv[1:])
