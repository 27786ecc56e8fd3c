//! A tokio-postgres agent for the PostgreSQL gateway tests: prepared
//! statements with parameters (binary results), a denied statement, an
//! empty one and a scrollable cursor moved with MOVE, all over the extended
//! protocol. Prints one JSON object with what it saw.
use serde_json::json;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), tokio_postgres::Error> {
    let dsn = std::env::args().nth(1).expect("usage: pg_agent DSN");
    let (mut client, connection) = tokio_postgres::connect(&dsn, tokio_postgres::NoTls).await?;
    let driver = tokio::spawn(connection);
    let statement = client
        .prepare("SELECT id, label FROM items WHERE id <= $1 ORDER BY id")
        .await?;
    let rows = client.query(&statement, &[&3i32]).await?;
    let labels: Vec<String> = rows.iter().map(|r| r.get::<_, String>(1)).collect();
    let customers = client
        .query("SELECT email, ssn, name FROM customers ORDER BY id", &[])
        .await?;
    let emails: Vec<String> = customers.iter().map(|r| r.get::<_, String>(0)).collect();
    let ssns: Vec<String> = customers.iter().map(|r| r.get::<_, String>(1)).collect();
    let denied = match client.execute("DELETE FROM items", &[]).await {
        Ok(_) => "not denied".to_owned(),
        Err(e) => e.code().map(|c| c.code().to_owned()).unwrap_or_default(),
    };
    let count: i64 = client.query_one("SELECT count(*) FROM items", &[]).await?.get(0);
    // An empty statement, prepared and run: EmptyQueryResponse, no rows.
    let empty = client.execute("", &[]).await?;
    // MOVE is a statement sqlparser cannot read; the gateway classifies it.
    let tx = client.transaction().await?;
    tx.execute("DECLARE c SCROLL CURSOR FOR SELECT id FROM items ORDER BY id", &[])
        .await?;
    tx.execute("MOVE 4 IN c", &[]).await?;
    let after_move: i32 = tx.query_one("FETCH 1 FROM c", &[]).await?.get(0);
    tx.commit().await?;
    driver.abort();
    println!(
        "{}",
        json!({"labels": labels, "emails": emails, "ssns": ssns, "denied": denied, "count": count,
               "empty": empty, "after_move": after_move})
    );
    Ok(())
}
