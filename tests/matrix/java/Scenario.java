// The client matrix's scenario for PgJDBC (see ../scenario_psycopg.py for the conventions).
// Compiled at test time against Debian's /usr/share/java/postgresql.jar. prepareThreshold=1:
// every statement is a named server-side statement from its first execution; batches are
// pipelined (Bind/Execute per row, one Sync); setFetchSize reads through a portal with a row
// limit.

import java.io.ByteArrayOutputStream;
import java.io.StringReader;
import java.math.BigInteger;
import java.security.MessageDigest;
import java.sql.BatchUpdateException;
import java.sql.Connection;
import java.sql.DriverManager;
import java.sql.PreparedStatement;
import java.sql.ResultSet;
import java.sql.SQLException;
import java.sql.Savepoint;
import java.sql.Statement;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.TreeMap;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.TimeoutException;
import org.postgresql.PGConnection;
import org.postgresql.PGNotification;
import org.postgresql.copy.CopyManager;
import org.postgresql.util.PSQLException;

public class Scenario {
    static final String NAME = "pgjdbc";
    static final String T = "m_pgjdbc";
    static final long STEP_TIMEOUT_S = 20;

    interface Step {
        void run() throws Exception;
    }

    static void out(String key, Object... values) {
        StringBuilder b = new StringBuilder(key).append(':');
        for (Object v : values) {
            b.append(' ').append(v);
        }
        System.out.println(b);
        System.out.flush();
    }

    /** A server error as SQLSTATE and message; anything else as its class and SQLSTATE. */
    static String err(Throwable e) {
        if (e instanceof PSQLException p && p.getServerErrorMessage() != null) {
            return p.getSQLState() + " " + p.getServerErrorMessage().getMessage();
        }
        if (e instanceof SQLException s) {
            return e.getClass().getSimpleName() + " " + s.getSQLState();
        }
        return e.getClass().getSimpleName();
    }

    static Connection connect(String appName, boolean withTimeout) throws SQLException {
        Properties p = new Properties();
        p.setProperty("user", System.getenv("MATRIX_USER"));
        p.setProperty("password", System.getenv("MATRIX_PASSWORD"));
        p.setProperty("ApplicationName", appName);
        if (withTimeout) {
            p.setProperty("options", "-c statement_timeout=12345");
        }
        p.setProperty("prepareThreshold", "1");
        p.setProperty("connectTimeout", "10");
        String url = "jdbc:postgresql://" + System.getenv("MATRIX_HOST") + ":" + System.getenv("MATRIX_PORT")
                + "/" + System.getenv("MATRIX_DB");
        return DriverManager.getConnection(url, p);
    }

    static Connection connect() throws SQLException {
        return connect("matrix-" + NAME, true);
    }

    static String one(Connection c, String sql, Object... params) throws SQLException {
        try (PreparedStatement st = c.prepareStatement(sql)) {
            for (int i = 0; i < params.length; i++) {
                st.setObject(i + 1, params[i]);
            }
            try (ResultSet rs = st.executeQuery()) {
                rs.next();
                return rs.getString(1);
            }
        }
    }

    static void stepStartup() throws Exception {
        try (Connection c = connect()) {
            for (String p : List.of("application_name", "statement_timeout", "client_encoding", "DateStyle")) {
                out("startup.show." + p, one(c, "SHOW " + p));
            }
            Map<String, String> reported = c.unwrap(PGConnection.class).getParameterStatuses();
            for (String p : List.of("application_name", "client_encoding", "DateStyle", "integer_datetimes",
                    "IntervalStyle", "is_superuser", "server_encoding", "server_version", "session_authorization",
                    "standard_conforming_strings", "TimeZone")) {
                out("startup.reported." + p, reported.get(p));
            }
            int key = c.unwrap(PGConnection.class).getBackendPID();
            out("startup.key_pid_is_backend_pid", String.valueOf(key).equals(one(c, "SELECT pg_backend_pid()")));
            try (Statement st = c.createStatement()) {
                st.execute("SET statement_timeout = 999");
                out("startup.after_set", one(c, "SHOW statement_timeout"));
                st.execute("DISCARD ALL");
            }
            out("startup.after_discard.statement_timeout", one(c, "SHOW statement_timeout"));
            out("startup.after_discard.application_name", one(c, "SHOW application_name"));
        }
        try (Connection c = connect("matrix-" + NAME + "-2", false)) {
            out("startup.other.statement_timeout", one(c, "SHOW statement_timeout"));
            out("startup.other.application_name", one(c, "SHOW application_name"));
        }
        try (Connection c = connect()) {
            out("startup.again.statement_timeout", one(c, "SHOW statement_timeout"));
            out("startup.again.application_name", one(c, "SHOW application_name"));
        }
    }

    static void stepEncoding() throws Exception {
        try (Connection c = connect(); Statement st = c.createStatement()) {
            try {
                st.execute("SET client_encoding TO 'latin1'");
                out("encoding.set", "accepted");
            } catch (SQLException e) {
                out("encoding.set", err(e));
            }
            out("encoding.closed", c.isClosed());
        }
        try (Connection c = connect()) {
            out("encoding.text", one(c, "SELECT 'é' || chr(255)"));
        }
    }

    static void stepTx() throws Exception {
        try (Connection c = connect(); Statement st = c.createStatement()) {
            st.execute("DROP TABLE IF EXISTS " + T + "_tx");
            st.execute("CREATE TABLE " + T + "_tx (id int PRIMARY KEY, v text)");
            c.setAutoCommit(false);
            out("tx.insert", st.executeUpdate("INSERT INTO " + T + "_tx VALUES (1, 'a'), (2, 'b')"));
            c.commit();
            st.executeUpdate("INSERT INTO " + T + "_tx VALUES (10, 'rolled back')");
            c.rollback();
            st.executeUpdate("INSERT INTO " + T + "_tx VALUES (3, 'c')");
            Savepoint sp = c.setSavepoint("s1");
            st.executeUpdate("INSERT INTO " + T + "_tx VALUES (4, 'd')");
            try (PreparedStatement ps = c.prepareStatement("INSERT INTO " + T + "_tx VALUES (?, ?)")) {
                ps.setInt(1, 1);
                ps.setString(2, "dup");
                ps.executeUpdate();
            } catch (PSQLException e) {
                out("tx.savepoint_error", err(e), e.getServerErrorMessage().getDetail());
            }
            c.rollback(sp);
            st.executeUpdate("INSERT INTO " + T + "_tx VALUES (5, 'e')");
            c.commit();
            List<Integer> ids = new ArrayList<>();
            try (ResultSet rs = st.executeQuery("SELECT id FROM " + T + "_tx ORDER BY id")) {
                while (rs.next()) {
                    ids.add(rs.getInt(1));
                }
            }
            c.commit();
            out("tx.ids", ids);
            st.executeUpdate("UPDATE " + T + "_tx SET v = 'z'");
            for (String[] q : new String[][] {{"tx.abort_error", "SELECT 1 / 0"}, {"tx.aborted_error", "SELECT 1"}}) {
                try {
                    st.executeQuery(q[1]).close();
                } catch (SQLException e) {
                    out(q[0], err(e));
                }
            }
            c.rollback();
            c.setAutoCommit(true);
            out("tx.after_rollback", one(c, "SELECT string_agg(v, ',' ORDER BY id) FROM " + T + "_tx"));
        }
    }

    static void stepPipeline() throws Exception {
        try (Connection c = connect(); Statement st = c.createStatement()) {
            st.execute("DROP TABLE IF EXISTS " + T + "_pipe");
            st.execute("CREATE TABLE " + T + "_pipe (id int PRIMARY KEY)");
            try (PreparedStatement ps = c.prepareStatement("INSERT INTO " + T + "_pipe VALUES (?)")) {
                for (int id : new int[] {1, 2, 1, 3}) {
                    ps.setInt(1, id);
                    ps.addBatch();
                }
                try {
                    out("pipeline.batch", Arrays.toString(ps.executeBatch()));
                } catch (BatchUpdateException e) {
                    out("pipeline.batch_error", err(e.getNextException()), Arrays.toString(e.getUpdateCounts()));
                }
            }
            out("pipeline.rows_after_error", one(c, "SELECT count(*) FROM " + T + "_pipe"));
            st.addBatch("INSERT INTO " + T + "_pipe VALUES (10)");
            st.addBatch("UPDATE " + T + "_pipe SET id = id + 100 WHERE id >= 10");
            st.addBatch("DELETE FROM " + T + "_pipe WHERE id = 110");
            out("pipeline.statement_batch", Arrays.toString(st.executeBatch()));
            try (PreparedStatement ps = c.prepareStatement("INSERT INTO " + T + "_pipe VALUES (?)")) {
                for (int id = 100; id < 300; id++) {
                    ps.setInt(1, id);
                    ps.addBatch();
                }
                out("pipeline.big_batch", Arrays.stream(ps.executeBatch()).sum());
            }
            out("pipeline.rows", one(c, "SELECT count(*) FROM " + T + "_pipe"));
        }
    }

    static boolean waitActive(String marker) throws Exception {
        try (Connection w = connect()) {
            long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(10);
            while (System.nanoTime() < deadline) {
                String n = one(w, "SELECT count(*) FROM pg_stat_activity WHERE query LIKE ? AND pid <> pg_backend_pid()",
                        "%" + marker + "%");
                if (!n.equals("0")) {
                    return true;
                }
                Thread.sleep(50);
            }
            return false;
        }
    }

    static void stepCancel() throws Exception {
        try (Connection c = connect(); Statement st = c.createStatement()) {
            long start = System.nanoTime();
            Thread canceller = new Thread(() -> {
                try {
                    out("cancel.seen_running", waitActive("cancel-me"));
                    st.cancel();
                } catch (Exception e) {
                    out("cancel.canceller", err(e));
                }
            });
            canceller.start();
            try {
                st.executeQuery("SELECT pg_sleep(30) /* cancel-me */").close();
                out("cancel.result", "not cancelled");
            } catch (SQLException e) {
                out("cancel.result", err(e));
            }
            canceller.join();
            out("cancel.fast", System.nanoTime() - start < TimeUnit.SECONDS.toNanos(10));
            out("cancel.after", one(c, "SELECT 1"));
            st.setQueryTimeout(1); // PgJDBC's own timer sends a cancel request
            try {
                st.executeQuery("SELECT pg_sleep(5)").close();
                out("cancel.query_timeout", "not cancelled");
            } catch (SQLException e) {
                out("cancel.query_timeout", err(e));
            }
        }
    }

    static void stepLarge() throws Exception {
        try (Connection c = connect(); Statement st = c.createStatement()) {
            long n = 0, sum = 0, len = 0;
            try (ResultSet rs = st.executeQuery("SELECT g, repeat('x', g % 100) FROM generate_series(1, 100000) g")) {
                while (rs.next()) {
                    n++;
                    sum += rs.getLong(1);
                    len += rs.getString(2).length();
                }
            }
            out("large.rows", n, sum, len);
            String big = one(c, "SELECT repeat('y', 300000) || 'end'");
            out("large.value", big.length(), big.substring(big.length() - 3));
            StringBuilder b = new StringBuilder();
            for (int i = 0; i < 400000; i++) {
                b.append((char) (0x41 + i % 26));
            }
            String param = b.append('é').toString();
            String md5 = md5(param.getBytes("UTF-8"));
            out("large.param_md5_match", md5.equals(one(c, "SELECT md5(?::text)", param)));
            out("large.after", one(c, "SELECT 'ok'"));
        }
    }

    static String md5(byte[] bytes) throws Exception {
        byte[] d = MessageDigest.getInstance("MD5").digest(bytes);
        return String.format("%032x", new BigInteger(1, d));
    }

    static void stepNotify() throws Exception {
        try (Connection c = connect(); Connection other = connect(); Statement st = c.createStatement()) {
            st.execute("LISTEN matrix_chan");
            String own = one(c, "SELECT pg_backend_pid()");
            String otherPid = one(other, "SELECT pg_backend_pid()");
            st.execute("NOTIFY matrix_chan, 'self-1'");
            one(other, "SELECT pg_notify('matrix_chan', 'other-1')");
            PGConnection pc = c.unwrap(PGConnection.class);
            List<PGNotification> got = new ArrayList<>();
            long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(5);
            while (got.size() < 2 && System.nanoTime() < deadline) {
                PGNotification[] ns = pc.getNotifications(200);
                if (ns != null) {
                    got.addAll(Arrays.asList(ns));
                }
            }
            for (PGNotification n : got) {
                String pid = String.valueOf(n.getPID());
                out("notify.got", n.getName(), n.getParameter(),
                        pid.equals(own) ? "pid=own" : pid.equals(otherPid) ? "pid=other" : "pid=?");
            }
            out("notify.self_pid_is_key_pid", got.stream().filter(n -> n.getParameter().equals("self-1"))
                    .map(n -> n.getPID() == pc.getBackendPID()).toList());
            st.execute("UNLISTEN *");
            one(other, "SELECT pg_notify('matrix_chan', 'after-unlisten')");
            PGNotification[] late = pc.getNotifications(500);
            out("notify.after_unlisten", late == null ? 0 : late.length);
        }
    }

    static void stepCopy() throws Exception {
        try (Connection c = connect(); Statement st = c.createStatement()) {
            st.execute("DROP TABLE IF EXISTS " + T + "_copy");
            st.execute("CREATE TABLE " + T + "_copy (id int, s text)");
            CopyManager cm = c.unwrap(PGConnection.class).getCopyAPI();
            StringBuilder b = new StringBuilder();
            for (int i = 0; i < 5000; i++) {
                b.append(i).append("\trow ").append(i).append(" é\\t\\\\\n");
            }
            out("copy.in", cm.copyIn("COPY " + T + "_copy FROM STDIN", new StringReader(b.toString())));
            ByteArrayOutputStream buf = new ByteArrayOutputStream();
            long rows = cm.copyOut("COPY (SELECT * FROM " + T + "_copy ORDER BY id) TO STDOUT", buf);
            out("copy.out", rows, md5(buf.toByteArray()));
            try {
                cm.copyIn("COPY " + T + "_copy FROM STDIN", new StringReader("1\tok\nx\tbad\n"));
                out("copy.bad", "accepted");
            } catch (SQLException e) {
                out("copy.bad", err(e));
            }
            out("copy.count", one(c, "SELECT count(*) FROM " + T + "_copy"));
        }
    }

    static String rows(PreparedStatement ps) throws SQLException {
        List<String> r = new ArrayList<>();
        try (ResultSet rs = ps.executeQuery()) {
            int cols = rs.getMetaData().getColumnCount();
            while (rs.next()) {
                List<String> row = new ArrayList<>();
                for (int i = 1; i <= cols; i++) {
                    row.add(rs.getString(i));
                }
                r.add(row.toString());
            }
        }
        return r.toString();
    }

    static void stepPrepared() throws Exception {
        try (Connection c = connect(); Statement st = c.createStatement()) {
            st.execute("DROP TABLE IF EXISTS " + T + "_prep");
            st.execute("CREATE TABLE " + T + "_prep (id int, v text)");
            try (PreparedStatement ins = c.prepareStatement("INSERT INTO " + T + "_prep VALUES (?, ?)")) {
                for (int i = 0; i < 20; i++) {
                    ins.setInt(1, i);
                    ins.setString(2, "v" + i);
                    ins.executeUpdate();
                }
            }
            String q = "SELECT * FROM " + T + "_prep WHERE id < ? ORDER BY id";
            String[][] plan = {
                {"prepared.first", "3", null},
                {"prepared.after_alter.0", "2", "ALTER TABLE " + T + "_prep ADD COLUMN w int DEFAULT 7"},
                {"prepared.after_alter.1", "2", null},
                {"prepared.after_drop", "2", "DROP TABLE " + T + "_prep"},
                {"prepared.recreated", "5", "CREATE TABLE " + T + "_prep (id int, v text); INSERT INTO " + T
                        + "_prep VALUES (1, 'again')"},
                {"prepared.after_deallocate", "5", "DEALLOCATE ALL"},
                {"prepared.after_deallocate_again", "5", null},
            };
            for (String[] p : plan) {
                if (p[2] != null) {
                    st.execute(p[2]);
                }
                try (PreparedStatement ps = c.prepareStatement(q)) { // from PgJDBC's statement cache
                    ps.setInt(1, Integer.parseInt(p[1]));
                    out(p[0], rows(ps));
                } catch (SQLException e) {
                    out(p[0], err(e));
                }
            }
            for (int i = 0; i < 300; i++) {
                try (PreparedStatement ps = c.prepareStatement("SELECT ?::int + " + i)) {
                    ps.setInt(1, i);
                    ps.executeQuery().close();
                }
            }
            out("prepared.server_side", one(c, "SELECT count(*) FROM pg_prepared_statements"));
        }
    }

    static void stepCursor() throws Exception {
        try (Connection c = connect()) {
            c.setAutoCommit(false);
            try (Statement st = c.createStatement()) {
                st.setFetchSize(300);
                long n = 0, sum = 0;
                try (ResultSet rs = st.executeQuery("SELECT g FROM generate_series(1, 1000) g")) {
                    while (rs.next()) {
                        n++;
                        sum += rs.getLong(1);
                    }
                }
                out("cursor.fetched", n, sum);
                st.execute("DECLARE matrix_cur CURSOR FOR SELECT g FROM generate_series(1, 10) g");
                List<String> sizes = new ArrayList<>();
                for (int i = 0; i < 4; i++) {
                    try (ResultSet rs = st.executeQuery("FETCH 3 FROM matrix_cur")) {
                        int k = 0;
                        while (rs.next()) {
                            k++;
                        }
                        sizes.add(String.valueOf(k));
                    }
                }
                out("cursor.sql_fetch", sizes);
            }
            c.commit();
            c.setAutoCommit(true);
            out("cursor.after", one(c, "SELECT count(*) FROM pg_cursors"));
        }
    }

    static void stepTerminate() throws Exception {
        Connection c = connect();
        try (Statement st = c.createStatement()) {
            st.executeQuery("SELECT pg_terminate_backend(pg_backend_pid())").close();
            out("terminate.result", "not terminated");
        } catch (SQLException e) {
            out("terminate.result", err(e));
        }
        out("terminate.closed", c.isClosed());
        try (Statement st = c.createStatement()) {
            st.executeQuery("SELECT 1").close();
            out("terminate.next", "ok");
        } catch (SQLException e) {
            out("terminate.next", err(e));
        }
        c.close();
        try (Connection again = connect()) {
            out("terminate.reconnect", one(again, "SELECT 'back'"));
        }
    }

    public static void main(String[] args) throws Exception {
        Map<String, Step> steps = new TreeMap<>();
        List<String> order = List.of("startup", "encoding", "tx", "pipeline", "cancel", "large", "notify", "copy",
                "prepared", "cursor", "terminate");
        steps.put("startup", Scenario::stepStartup);
        steps.put("encoding", Scenario::stepEncoding);
        steps.put("tx", Scenario::stepTx);
        steps.put("pipeline", Scenario::stepPipeline);
        steps.put("cancel", Scenario::stepCancel);
        steps.put("large", Scenario::stepLarge);
        steps.put("notify", Scenario::stepNotify);
        steps.put("copy", Scenario::stepCopy);
        steps.put("prepared", Scenario::stepPrepared);
        steps.put("cursor", Scenario::stepCursor);
        steps.put("terminate", Scenario::stepTerminate);
        ExecutorService pool = Executors.newCachedThreadPool(r -> {
            Thread t = new Thread(r);
            t.setDaemon(true); // a step that timed out must not keep the JVM alive
            return t;
        });
        for (String name : order) {
            Step step = steps.get(name);
            Future<?> f = pool.submit(() -> {
                step.run();
                return null;
            });
            try {
                f.get(STEP_TIMEOUT_S, TimeUnit.SECONDS);
            } catch (TimeoutException e) {
                f.cancel(true);
                out(name + ".failed", "step took more than " + STEP_TIMEOUT_S + " s");
            } catch (java.util.concurrent.ExecutionException e) {
                out(name + ".failed", err(e.getCause()));
            }
        }
        out("done", NAME);
        System.exit(0);
    }
}
